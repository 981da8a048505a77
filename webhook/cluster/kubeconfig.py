"""A kubeconfig file checked before the Kubernetes client reads it, so a broken one is one line.

The client reports a broken kubeconfig as whatever its walk trips on (`'NoneType' object does not
support item assignment`, a four-line YAML trace) or not at all: a cluster with no `server` becomes
an empty URL that is retried for ever. `check` reads the parts a connection uses, the way the
client resolves them (the current context, its cluster and user; files relative to the
kubeconfig's folder; a CA file only for an https server), and raises `CredentialsError` naming
the file and the field.

Invariant: it refuses only what the client could not connect with; what it accepts the client
still loads (and may still refuse, in its own words).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml


class CredentialsError(Exception):
    """Cluster credentials would not load; `source` names where they were looked for."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


Fail = Callable[[str], CredentialsError]


def one_line(text: str) -> str:
    """A message on one line: the client's multi-line errors, collapsed."""
    return " ".join(text.split())


def default_path() -> Path | None:
    """The one file the client reads when no kubeconfig is named: $KUBECONFIG, else
    ~/.kube/config; None when $KUBECONFIG lists several (the client merges them)."""
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if len(listed) > 1:
        return None
    return Path(listed[0]) if listed else Path("~/.kube/config").expanduser()


def check(path: Path) -> None:
    """CredentialsError (source: the file) unless `path` is a kubeconfig one can connect with."""
    source = str(path)

    def fail(reason: str) -> CredentialsError:
        return CredentialsError(source, reason)

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise fail("not a kubeconfig: not UTF-8 text") from None
    except OSError as exc:
        raise fail(str(exc.strerror or exc)) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise fail(f"not a kubeconfig: invalid YAML{where}") from None
    if doc is None:
        raise fail("not a kubeconfig: the file is empty")
    if not isinstance(doc, Mapping):
        raise fail("not a kubeconfig: not a mapping of contexts, clusters and users")
    current = doc.get("current-context")
    if not isinstance(current, str) or not current:
        raise fail("current-context: not set (kubefence has no --context flag)")
    context_at, context = _named(doc, "contexts", current, "current-context", fail)
    cluster_name = context.get("cluster")
    if not isinstance(cluster_name, str) or not cluster_name:
        raise fail(f"{context_at}.cluster: not set")
    cluster_at, cluster = _named(doc, "clusters", cluster_name, f"{context_at}.cluster", fail)
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise fail(f"{cluster_at}.server: must be a URL such as https://host:6443")
    base = path.parent
    if server.startswith("https://"):
        _file_or_data(cluster, cluster_at, "certificate-authority", base, fail)
    user_name = context.get("user")
    if isinstance(user_name, str) and user_name and isinstance(doc.get("users"), list):
        # As the client reads it: a context naming no known user connects without credentials.
        found = _user(doc["users"], user_name)
        if found is not None:
            index, user = found
            user_at = f"users[{index}].user"
            if not isinstance(user, Mapping):
                raise fail(f"{user_at}: must be a mapping")
            _file_or_data(user, user_at, "token", base, fail, file_key="tokenFile", encoded=False)
            if server.startswith("https://"):
                _file_or_data(user, user_at, "client-certificate", base, fail)
                _file_or_data(user, user_at, "client-key", base, fail)


def _user(entries: list[Any], name: str) -> tuple[int, Any] | None:
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return index, entry.get("user")
    return None


def _named(
    doc: Mapping[str, Any], key: str, name: str, named_by: str, fail: Fail
) -> tuple[str, Mapping[str, Any]]:
    """The `key` entry (contexts, clusters) called `name`: its field path and its body."""
    entries = doc.get(key)
    if not isinstance(entries, list):
        raise fail(f"{key}: must be a list of entries with a name")
    body_key = key[:-1]  # contexts[i].context, clusters[i].cluster
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise fail(f"{key}[{index}]: must be a mapping with a name")
        if entry["name"] == name:
            body = entry.get(body_key)
            if not isinstance(body, Mapping):
                raise fail(f"{key}[{index}].{body_key}: must be a mapping")
            return f"{key}[{index}].{body_key}", body
    raise fail(f"{named_by}: no entry named {name!r} in {key}")


def _file_or_data(
    section: Mapping[str, Any],
    at: str,
    key: str,
    base: Path,
    fail: Fail,
    *,
    file_key: str | None = None,
    encoded: bool = True,
) -> None:
    """`key-data` (base64) wins over the file `key`, as the client reads them."""
    data_key = key if not encoded else f"{key}-data"
    file_key = file_key or key
    data = section.get(data_key)
    if data:
        if encoded:
            try:
                base64.b64decode(str(data))  # as leniently as the client
            except (binascii.Error, ValueError):
                raise fail(f"{at}.{data_key}: not base64") from None
        return
    name = section.get(file_key)
    if name is None:
        return
    if not isinstance(name, str) or not name:
        raise fail(f"{at}.{file_key}: must be a file name")
    file = base / name
    if not file.is_file():
        reason = "is a directory" if file.is_dir() else "no such file"
        raise fail(f"{at}.{file_key}: {file}: {reason}")
