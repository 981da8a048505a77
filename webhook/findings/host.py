"""What `scan` finds on the ways onto the node: the `host-network` rule's findings, for running
Pods and for workload templates.

Each object is judged by the rule's own `rules.host_network.findings` over its pod spec, with the
modes of its namespace (overrides included), so scan reports exactly what the webhook would deny,
warn about or audit on the object's next CREATE; a finding whose mode is off is not reported. A
Pod counts while it runs (not Succeeded or Failed). A template counts whatever its replica count:
a scale-up, which the UPDATE ratchet lets through unjudged, starts Pods from it.
Pure: plain objects in, frozen findings out; malformed fields are skipped, never raised.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from webhook.findings.model import HostFinding
from webhook.rules.host_network import MODES, findings
from webhook.settings import Settings
from webhook.workloads import WORKLOAD_TEMPLATES

# The kinds whose pod spec the rule judges, as (API group, resource) of WORKLOAD_TEMPLATES.
WORKLOAD_KINDS: dict[str, tuple[str, str]] = {
    "Pod": ("", "pods"),
    "ReplicationController": ("", "replicationcontrollers"),
    "Deployment": ("apps", "deployments"),
    "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"),
}
_FINISHED = ("Succeeded", "Failed")


def host_findings(
    objects: Iterable[Mapping[str, Any]],
    left_out: Collection[str],
    settings: Settings,
    enforce: Settings | None = None,
) -> tuple[HostFinding, ...]:
    """The host-network findings of the Pods and templates outside the `left_out` namespaces
    (exempt, Terminating), by namespace, kind and name, each with its mode under `enforce` (the
    settings of `mode: enforce`) too. A namespace no Namespace object names is judged: the
    webhook judges it too."""
    enforce = enforce or settings
    order = list(WORKLOAD_KINDS)
    found: list[tuple[tuple[str, int, str], HostFinding]] = []
    for obj in objects:
        kind, meta = obj.get("kind"), obj.get("metadata")
        if kind not in WORKLOAD_KINDS or not isinstance(meta, Mapping):
            continue
        name, namespace = meta.get("name"), meta.get("namespace") or "default"
        if not isinstance(name, str) or namespace in left_out:
            continue
        status = obj.get("status")
        if kind == "Pod" and isinstance(status, Mapping) and status.get("phase") in _FINISHED:
            continue
        path = WORKLOAD_TEMPLATES[WORKLOAD_KINDS[kind]]
        node: object = obj
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        spec = node.get("spec") if isinstance(node, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        modes = {key: settings.mode(key, namespace) for key in MODES}
        spec_path = ".".join((*path, "spec"))
        owner = owner_of(meta) if kind == "Pod" else ""
        for f in findings(f'{kind} "{name}"', spec, spec_path, modes, settings.host_paths):
            finding = HostFinding(
                namespace,
                f"{kind} {name}",
                f.key,
                f.fields,
                f.text,
                modes[f.key].value,
                owner,
                enforce.mode(f.key, namespace).value,
            )
            found.append(((namespace, order.index(kind), name), finding))
    return tuple(f for _, f in sorted(found, key=lambda item: item[0]))


def controller_ref(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference marked controller, None when there is none."""
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return ref
    return None


def owner_of(meta: Mapping[str, Any]) -> str:
    """`Kind name` of the ownerReference marked controller, "" when there is none."""
    ref = controller_ref(meta)
    return f"{ref.get('kind', '?')} {ref.get('name', '?')}" if ref is not None else ""
