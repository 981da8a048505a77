"""What this cluster re-creates on its own, decided by the webhook's `decide`: scan's gate.

Each workload object stands for the requests its controller sends without anyone acting: a
ReplicaSet's, ReplicationController's, StatefulSet's, DaemonSet's or Job's next Pod (by
`replicaset-controller`, `replication-controller`, `statefulset-controller`,
`daemon-set-controller`, `job-controller`); a Deployment's next ReplicaSet (a rollout, by
`deployment-controller`) and that ReplicaSet's Pod; a CronJob's next Job (by
`cronjob-controller`) and its Pod. A running Pod stands for its own re-creation by its
controller (ownerReferences), a static Pod's mirror by its node's kubelet (`system:node:NAME`),
and a Pod no controller owns for a CREATE of the same Pod by any user. Each request is built as the
API server sends it (a Pod CREATE whose object is the template's metadata and spec, no name on the
URL) and decided by `webhook.decide.decide` itself under the given settings, so scan denies
exactly what the webhook would: exemptions (namespaces, users, groups), every rule that judges
a Pod or workload CREATE (default-deny, host-network, audit-scope) and their modes.

Nothing is re-created by a Pod that finished (Succeeded, Failed), a Job that completed or failed
(a condition `Complete` or `Failed` True: its controller makes no more Pods), or in a Terminating
namespace (NamespaceLifecycle refuses creates before any webhook). A template counts whatever its
replica count and a CronJob whatever its `suspend`: a scale-up or a resume starts Pods from it.
Pure: plain objects and a cluster view in, frozen findings out; malformed fields are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.admission import AdmissionRequest, GroupVersionKind, GroupVersionResource, UserInfo
from webhook.cluster.view import ClusterView
from webhook.decide import decide
from webhook.findings.host import WORKLOAD_KINDS, owner_of
from webhook.findings.model import WouldDeny
from webhook.findings.usual_writers import ANY_USER, Writer, controller_writer
from webhook.settings import Mode, Settings

# The kind a controller's template makes Pods for -> the controller that sends their CREATE.
POD_MAKERS: Mapping[str, str] = {
    "ReplicaSet": "replicaset-controller",
    "ReplicationController": "replication-controller",
    "StatefulSet": "statefulset-controller",
    "DaemonSet": "daemon-set-controller",
    "Job": "job-controller",
}
_POD = (GroupVersionKind("", "v1", "Pod"), GroupVersionResource("", "v1", "pods"))
_REPLICA_SET = (
    GroupVersionKind("apps", "v1", "ReplicaSet"),
    GroupVersionResource("apps", "v1", "replicasets"),
)
_JOB = (GroupVersionKind("batch", "v1", "Job"), GroupVersionResource("batch", "v1", "jobs"))
_FINISHED = ("Succeeded", "Failed")
UID = "kubefence-scan"


@dataclass(frozen=True, slots=True)
class Recreation:
    """One request the cluster sends on its own for a workload, and who sends it."""

    writer: Writer
    request: AdmissionRequest

    @property
    def resource(self) -> str:
        """`pods`, `apps/replicasets`, `batch/jobs`: as the audit-scope findings name it."""
        gvr = self.request.resource
        return f"{gvr.group}/{gvr.resource}" if gvr.group else gvr.resource


def would_deny(
    workloads: Iterable[Mapping[str, Any]], cluster: ClusterView, settings: Settings
) -> tuple[WouldDeny, ...]:
    """Every re-creation of `workloads` that `decide` denies under `settings` (the enforce
    ones: `enforce_modes.enforce_settings`), by namespace, kind and name."""
    order = list(WORKLOAD_KINDS)
    found: list[tuple[tuple[str, int, str], WouldDeny]] = []
    for obj in workloads:
        kind, meta = obj.get("kind"), obj.get("metadata")
        if kind not in WORKLOAD_KINDS or not isinstance(meta, Mapping):
            continue
        name, namespace = meta.get("name"), str(meta.get("namespace") or "default")
        if not isinstance(name, str) or not recreated(obj):
            continue
        facts = cluster.namespace(namespace)
        if facts is not None and facts.terminating:
            continue
        owner = owner_of(meta) if kind == "Pod" else ""
        for step in recreations(obj):
            decision = decide(step.request, cluster, settings)
            if decision.allowed:
                continue
            denied = [r for r in decision.failed if r.mode is Mode.ENFORCE]
            finding = WouldDeny(
                namespace,
                f"{kind} {name}",
                owner,
                step.request.kind.kind,
                step.resource,
                step.writer.label,
                tuple(dict.fromkeys(r.rule for r in denied)),
                tuple(r.message for r in denied),
            )
            found.append(((namespace, order.index(kind), name), finding))
    return tuple(f for _, f in sorted(found, key=lambda item: item[0]))


def unread_workloads(unread: Iterable[str]) -> tuple[str, ...]:
    """The lists scan could not read (`deployments (403 Forbidden)`) that hold workloads: the
    gate cannot tell what those re-create."""
    resources = {resource for _, resource in WORKLOAD_KINDS.values()}
    return tuple(u for u in unread if u.split(" ", 1)[0] in resources)


def recreated(obj: Mapping[str, Any]) -> bool:
    """Whether the cluster will make anything more of `obj`: not a finished Pod or Job."""
    status = obj.get("status")
    if not isinstance(status, Mapping):
        return True
    if obj.get("kind") == "Pod":
        return status.get("phase") not in _FINISHED
    if obj.get("kind") == "Job":
        conditions = status.get("conditions")
        return not any(
            isinstance(c, Mapping) and c.get("type") in _FINISHED_JOB and c.get("status") == "True"
            for c in (conditions if isinstance(conditions, list) else ())
        )
    return True


_FINISHED_JOB = ("Complete", "Failed")


def recreations(obj: Mapping[str, Any]) -> tuple[Recreation, ...]:
    """The requests the cluster sends on its own for one workload object, in the order sent."""
    kind = obj.get("kind")
    meta = _map(obj.get("metadata"))
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "default")
    spec = _map(obj.get("spec"))
    if kind == "Pod":
        return (_pod(namespace, meta, spec, _pod_writer(meta), generate=""),)
    if kind in POD_MAKERS:
        template = _map(spec.get("template"))
        writer = controller_writer(POD_MAKERS[str(kind)])
        return (_from_template(namespace, f"{name}-", template, writer),)
    if kind == "Deployment":
        template = _map(spec.get("template"))
        replica_set = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": _owned(namespace, f"{name}-", _map(template.get("metadata")), kind, name),
            "spec": {
                "replicas": spec.get("replicas", 1),
                "selector": spec.get("selector"),
                "template": template,
            },
        }
        return (
            _create(
                _REPLICA_SET, namespace, replica_set, controller_writer("deployment-controller")
            ),
            _from_template(
                namespace, f"{name}-", template, controller_writer(POD_MAKERS["ReplicaSet"])
            ),
        )
    if kind == "CronJob":
        job_template = _map(spec.get("jobTemplate"))
        job_spec = _map(job_template.get("spec"))
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _owned(
                namespace, f"{name}-", _map(job_template.get("metadata")), kind, name
            ),
            "spec": job_spec,
        }
        template = _map(job_spec.get("template"))
        return (
            _create(_JOB, namespace, job, controller_writer("cronjob-controller")),
            _from_template(namespace, f"{name}-", template, controller_writer(POD_MAKERS["Job"])),
        )
    return ()


def _from_template(
    namespace: str, owner: str, template: Mapping[str, Any], writer: Writer
) -> Recreation:
    """The Pod a controller makes from `template`, named by the API server (generateName)."""
    return _pod(
        namespace, _map(template.get("metadata")), _map(template.get("spec")), writer, owner
    )


def _pod(
    namespace: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    writer: Writer,
    generate: str,
) -> Recreation:
    metadata: dict[str, Any] = {"namespace": namespace}
    for key in ("name", "labels", "annotations", "ownerReferences"):
        if key in meta:
            metadata[key] = meta[key]
    if generate:
        metadata.pop("name", None)
        metadata["generateName"] = generate
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": dict(spec)}
    return _create(_POD, namespace, pod, writer)


def _owned(
    namespace: str, generate: str, template_meta: Mapping[str, Any], kind: object, name: str
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": generate, "namespace": namespace}
    if "labels" in template_meta:
        metadata["labels"] = template_meta["labels"]
    metadata["ownerReferences"] = [{"kind": kind, "name": name, "controller": True}]
    return metadata


def _create(
    kind: tuple[GroupVersionKind, GroupVersionResource],
    namespace: str,
    obj: Mapping[str, Any],
    writer: Writer,
) -> Recreation:
    """A CREATE as the API server sends it: a POST to the collection, so no name on the URL."""
    request = AdmissionRequest(
        uid=UID,
        kind=kind[0],
        resource=kind[1],
        operation="CREATE",
        user=writer.user,
        namespace=namespace,
        object=obj,
    )
    return Recreation(writer, request)


def _pod_writer(meta: Mapping[str, Any]) -> Writer:
    """Who re-creates a running Pod: its controller, its node's kubelet (a static Pod's mirror),
    or, owned by neither, any user."""
    kind, name = _controller_ref(meta)
    if kind in POD_MAKERS:
        return controller_writer(POD_MAKERS[kind])
    if kind == "Node" and name:
        node = f"system:node:{name}"
        return Writer(node, UserInfo(node, ("system:nodes", "system:authenticated")))
    return ANY_USER


def _controller_ref(meta: Mapping[str, Any]) -> tuple[str, str]:
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return str(ref.get("kind", "")), str(ref.get("name", ""))
    return "", ""


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
