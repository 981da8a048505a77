"""A cluster given as manifests (`--state DIR`): Namespaces, NetworkPolicies and Pods from YAML.

`objects_of` reads other kinds from the same folder (for `scan`: Services, ClusterRoles and
ClusterRoleBindings), as they are; the folder is then also the whole cluster for those.

Every `*.yaml`/`*.yml`/`*.json` file below the folder is read (multi-document, `kind: List` too);
objects of other kinds are ignored. The folder is the whole cluster: a namespace with no Pod in it
has no running Pods. A manifest the API server would refuse to create is a ManifestError naming
the file, document and field (`webhook.cluster.manifest_check`); a folder with none of the three
kinds is an empty cluster, said on stderr.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from webhook.cluster.manifest_check import KINDS, refusal
from webhook.cluster.view import NamespaceFacts, StaticView, namespace_facts
from webhook.errors import ManifestError
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.netpol import DEFAULT_LIMITS, Limits, PolicyFacts, analyse_policy

_SUFFIXES = (".yaml", ".yml", ".json")


def load_state(
    directory: str | Path,
    limits: Limits = DEFAULT_LIMITS,
    warn: Callable[[str], None] | None = None,
) -> StaticView:
    """Read a state folder into a StaticView; ManifestError names the file and document.

    Policies are analysed under `limits`; `warn` (default: a line on stderr) is told when the
    folder holds no object kubefence reads.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory")
    objects = list(_objects(root))
    if not any(obj.get("kind") in KINDS for _, obj in objects):
        (warn or _warn_on_stderr)(
            f"{root}: no Namespace, NetworkPolicy or Pod in any *.yaml, *.yml or *.json file:"
            " an empty cluster, where no namespace is fenced"
        )
    return StaticView(build_facts(iter(objects), limits))


def objects_of(directory: str | Path, kinds: Iterable[str]) -> list[Mapping[str, Any]]:
    """Every object of the given kinds in a state folder (ManifestError as `load_state`)."""
    wanted = frozenset(kinds)
    return [obj for _, obj in _objects(Path(directory)) if obj.get("kind") in wanted]


def _warn_on_stderr(message: str) -> None:
    print(f"kubefence: warning: {message}", file=sys.stderr, flush=True)


def build_facts(
    objects: Iterator[tuple[str, Mapping[str, Any]]], limits: Limits = DEFAULT_LIMITS
) -> list[NamespaceFacts]:
    """Reduce (source, object) pairs to namespace facts, analysing policies under `limits`."""
    namespaces: dict[str, Mapping[str, Any]] = {}
    policies: dict[str, list[PolicyFacts]] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    for source, obj in objects:
        kind, meta = obj.get("kind"), obj.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            if kind in ("Namespace", "NetworkPolicy", "Pod"):
                raise ManifestError(f"{source}: {kind} without metadata.name")
            continue
        if kind == "Namespace":
            namespaces[meta["name"]] = obj
        elif kind == "NetworkPolicy":
            policy = analyse_policy(obj, limits)
            policies[policy.namespace or "default"].append(policy)
        elif kind == "Pod":
            phase = (obj.get("status") or {}).get("phase", "Running")
            if phase not in ("Succeeded", "Failed"):
                running[str(meta.get("namespace") or "default")] += 1
    names = set(namespaces) | set(policies) | set(running)
    return [_facts(n, namespaces.get(n), policies[n], running[n], limits) for n in sorted(names)]


def _facts(
    name: str,
    obj: Mapping[str, Any] | None,
    policies: list[PolicyFacts],
    running: int,
    limits: Limits,
) -> NamespaceFacts:
    meta = (obj or {}).get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels[NAMESPACE_NAME_LABEL] = name
    phase = ((obj or {}).get("status") or {}).get("phase")
    terminating = phase == "Terminating" or bool(meta.get("deletionTimestamp"))
    return namespace_facts(
        name, policies, labels=labels, terminating=terminating, running_pods=running, limits=limits
    )


def _objects(root: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for path in sorted(p for p in root.rglob("*") if p.suffix in _SUFFIXES and p.is_file()):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ManifestError(f"{path}: cannot read: {_reason(exc)}") from None
        for index, doc in enumerate(documents):
            source = f"{path}: document {index + 1}"
            if doc is None:
                continue
            if not isinstance(doc, Mapping):
                raise ManifestError(f"{source}: not a Kubernetes object")
            if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
                items = doc.get("items") or []
                if not isinstance(items, list):
                    raise ManifestError(f"{source}: items must be a list")
                for item_index, item in enumerate(items):
                    at = f"{source}: items[{item_index}]"
                    if not isinstance(item, Mapping):
                        raise ManifestError(f"{at}: not a Kubernetes object")
                    yield _checked(at, item)
                continue
            yield _checked(source, doc)


def _checked(source: str, obj: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    refused = refusal(obj)
    if refused is not None:
        raise ManifestError(f"{source}: {obj.get('kind')}{_named(obj)}: {refused}")
    return source, obj


def _named(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f" {name}" if isinstance(name, str) and name else ""


def _reason(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"invalid YAML at line {mark.line + 1}"
    return exc.__class__.__name__
