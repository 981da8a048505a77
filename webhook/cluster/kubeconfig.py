"""Kubeconfig files read as kubectl reads them, checked before the client sees them, so a broken
one is one line.

`load` merges the files (`--kubeconfig FILE` alone, else every file `$KUBECONFIG` lists, else
~/.kube/config) the way client-go's loader does (k8s.io/client-go/tools/clientcmd/loader.go,
`ClientConfigLoadingRules.Load`): for the maps (clusters, contexts, users) the first file to
define a name wins and later entries of that name are dropped whole; for `current-context` too
the first file that sets it wins; files `$KUBECONFIG` lists that do not exist are skipped; a
relative path in an entry is read beside the file the entry came from (`ResolveLocalPaths`).
The Python client's own merge lets the last file's current-context win, so it is handed the
merged document, never the list.

The client reports a broken kubeconfig as whatever its walk trips on (`'NoneType' object does not
support item assignment`, a four-line YAML trace) or not at all: a cluster with no `server` becomes
an empty URL that is retried for ever. `load` reads the parts a connection uses, the way the
client resolves them (the context, its cluster and user; a CA file only for an https server), and
raises `CredentialsError` naming the file and the field.

Invariant: it refuses only what the client could not connect with; what it accepts the client
still loads (and may still refuse, in its own words).
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The three maps of a kubeconfig; each entry is `{name: ..., <singular>: {...}}`.
MAPS = ("clusters", "contexts", "users")
# The fields naming a file that client-go resolves beside the entry's own file
# (`GetClusterFileReferences`, `GetAuthInfoFileReferences`).
FILE_FIELDS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}


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


@dataclass(frozen=True)
class Kubeconfig:
    """What the client is given: one merged document, and the context it connects with."""

    document: dict[str, Any]  # clusters, contexts, users (file paths absolute), current-context
    context: str
    server: str  # the context's cluster's URL, for messages
    source: str  # the file, or the files merged (os.pathsep between), for messages


def default_files(environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The files kubectl reads when no --kubeconfig is given: each one $KUBECONFIG lists
    (os.pathsep between; empty names dropped, a repeated one read once, as client-go's
    `deduplicate`), else ~/.kube/config."""
    env = os.environ if environ is None else environ
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not listed:
        return (Path("~/.kube/config").expanduser(),)
    return tuple(Path(p) for p in dict.fromkeys(listed))


def load(
    files: Sequence[Path], context: str | None = None, *, explicit: bool = False
) -> Kubeconfig:
    """The files merged as kubectl merges them and the context (`--context`, else the first
    current-context set) checked; CredentialsError naming the file and field otherwise.

    `explicit` (`--kubeconfig FILE`): a missing file is an error; else missing files are
    skipped, as client-go skips them, and only none existing is one."""
    read = [(path, doc) for path in files if (doc := _read(path, explicit=explicit)) is not None]
    source = os.pathsep.join(str(p) for p in files)
    if not read:
        raise CredentialsError(
            source, "no such file" if len(files) == 1 else "none of these files exists"
        )
    merged, origins = merge(read)
    if context is None:
        current, named_in = _current_context(read)
        if current is None:
            raise CredentialsError(source, "current-context: not set (give --context NAME)")
        named_by, named_in_source = "current-context", str(named_in)
    else:
        current, named_by, named_in_source = context, f"--context {context}", source
    ctx_file, ctx_at, ctx = _find(
        merged, origins, "contexts", current, named_by=named_by, source=named_in_source
    )
    cluster_name = ctx.get("cluster")
    if not isinstance(cluster_name, str) or not cluster_name:
        raise CredentialsError(str(ctx_file), f"{ctx_at}.cluster: not set")
    cl_file, cl_at, cluster = _find(
        merged,
        origins,
        "clusters",
        cluster_name,
        named_by=f"{ctx_at}.cluster",
        source=str(ctx_file),
    )
    fail_cluster = _failer(cl_file)
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise fail_cluster(f"{cl_at}.server: must be a URL such as https://host:6443")
    if server.startswith("https://"):
        _file_or_data(cluster, cl_at, "certificate-authority", fail_cluster)
    user_name = ctx.get("user")
    if isinstance(user_name, str) and user_name:
        # As the client reads it: a context naming no known user connects without credentials.
        found = _user(merged, origins, user_name)
        if found is not None:
            user_file, user_at, user = found
            fail_user = _failer(user_file)
            if not isinstance(user, Mapping):
                raise fail_user(f"{user_at}: must be a mapping")
            _file_or_data(user, user_at, "token", fail_user, file_key="tokenFile", encoded=False)
            if server.startswith("https://"):
                _file_or_data(user, user_at, "client-certificate", fail_user)
                _file_or_data(user, user_at, "client-key", fail_user)
    document = {"apiVersion": "v1", "kind": "Config", "current-context": current, **merged}
    return Kubeconfig(document=document, context=current, server=server, source=source)


Origins = dict[tuple[str, str], tuple[Path, int]]


def merge(files: Sequence[tuple[Path, Mapping[str, Any]]]) -> tuple[dict[str, list[Any]], Origins]:
    """The maps of several kubeconfigs as client-go merges them: the first file to define a name
    wins (a later file's entry of that name is dropped whole, even its fields the first lacks);
    within one file the last entry of a name, as client-go's conversion to maps keeps it. Each
    entry's relative file names are made absolute beside its own file. Returns the merged lists
    and where each entry came from: (map, name) -> (file, index in that file)."""
    merged: dict[str, list[Any]] = {key: [] for key in MAPS}
    origins: Origins = {}
    for path, doc in files:
        for key in MAPS:
            entries = _entries(doc, key, path)
            for name, (index, entry) in entries.items():
                if (key, name) in origins:
                    continue
                origins[(key, name)] = (path, index)
                merged[key].append(_resolved(key, entry, path.parent))
    return merged, origins


def _read(path: Path, *, explicit: bool) -> Mapping[str, Any] | None:
    """The file's mapping; None when it does not exist and need not (`explicit` False)."""

    def fail(reason: str) -> CredentialsError:
        return CredentialsError(str(path), reason)

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not explicit:
            return None
        raise fail("no such file") from None
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
        if not explicit:
            return {}  # client-go loads an empty file of $KUBECONFIG as an empty config
        raise fail("not a kubeconfig: the file is empty")
    if not isinstance(doc, Mapping):
        raise fail("not a kubeconfig: not a mapping of contexts, clusters and users")
    return doc


def _entries(doc: Mapping[str, Any], key: str, path: Path) -> dict[str, tuple[int, Any]]:
    """A file's `key` list by name (the last of a name), each entry checked to have a name."""
    entries = doc.get(key)
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise CredentialsError(str(path), f"{key}: must be a list of entries with a name")
    found: dict[str, tuple[int, Any]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise CredentialsError(str(path), f"{key}[{index}]: must be a mapping with a name")
        found[entry["name"]] = (index, entry)
    return found


def _resolved(key: str, entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The entry with its file names absolute, beside `base` (client-go's `ResolvePaths`; an
    exec plugin's command only when it is a path, not a name looked up on $PATH)."""
    out = copy.deepcopy(dict(entry))
    body = out.get(key[:-1])
    if not isinstance(body, dict):
        return out
    for field in FILE_FIELDS.get(key, ()):
        value = body.get(field)
        if isinstance(value, str) and value and not os.path.isabs(value):
            body[field] = str(base.absolute() / value)
    plugin = body.get("exec") if key == "users" else None
    command = plugin.get("command") if isinstance(plugin, dict) else None
    if isinstance(command, str) and os.sep in command and not os.path.isabs(command):
        body["exec"]["command"] = str(base.absolute() / command)
    return out


def _current_context(
    files: Sequence[tuple[Path, Mapping[str, Any]]],
) -> tuple[str | None, Path | None]:
    """The first current-context set, and the file that set it (client-go merges the non-map
    fields so that the first file to set one wins)."""
    for path, doc in files:
        current = doc.get("current-context")
        if isinstance(current, str) and current:
            return current, path
    return None, None


def _failer(path: Path) -> Fail:
    def fail(reason: str) -> CredentialsError:
        return CredentialsError(str(path), reason)

    return fail


def _find(
    merged: Mapping[str, list[Any]],
    origins: Origins,
    key: str,
    name: str,
    *,
    named_by: str,
    source: str,
) -> tuple[Path, str, Mapping[str, Any]]:
    """The merged `key` entry called `name`: its file, field path there, and body."""
    where = origins.get((key, name))
    if where is None:
        raise CredentialsError(source, f"{named_by}: no entry named {name!r} in {key}")
    path, index = where
    body_key = key[:-1]  # contexts[i].context, clusters[i].cluster
    entry = next(e for e in merged[key] if e["name"] == name)
    body = entry.get(body_key)
    if not isinstance(body, Mapping):
        raise CredentialsError(str(path), f"{key}[{index}].{body_key}: must be a mapping")
    return path, f"{key}[{index}].{body_key}", body


def _user(
    merged: Mapping[str, list[Any]], origins: Origins, name: str
) -> tuple[Path, str, Any] | None:
    where = origins.get(("users", name))
    if where is None:
        return None
    path, index = where
    entry = next(e for e in merged["users"] if e["name"] == name)
    return path, f"users[{index}].user", entry.get("user")


def _file_or_data(
    section: Mapping[str, Any],
    at: str,
    key: str,
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
    file = Path(name)  # absolute: resolved beside its kubeconfig by `merge`
    if not file.is_file():
        reason = "is a directory" if file.is_dir() else "no such file"
        raise fail(f"{at}.{file_key}: {file}: {reason}")
