"""What the cluster's controllers create from a workload on their own, and scan's gate on it.

The one table of what controllers send (`MADE`, `made_by`; `kubefence check` judges a manifest's
controller requests by it too): a ReplicaSet's, ReplicationController's, StatefulSet's,
DaemonSet's or Job's next Pod (by `replicaset-controller`, `replication-controller`,
`statefulset-controller`, `daemon-set-controller`, `job-controller`); a Deployment's next
ReplicaSet (a rollout, by `deployment-controller`) and that ReplicaSet's Pod; a CronJob's next Job
(by `cronjob-controller`) and its Pod. Each made object is built as its controller builds it
(`_made_from`) and sent as the API server sends a CREATE (`create_request`). For scan, a running
Pod stands for its own re-creation (`recreations`) by its controller (ownerReferences), a static
Pod's mirror by its node's kubelet (`system:node:NAME`), and a Pod no controller owns for a
CREATE of the same Pod by any user. `would_deny` decides each by `webhook.decide.decide` itself
under the given settings, so scan denies exactly what the webhook would: exemptions (namespaces,
users, groups), every rule that judges a Pod or workload CREATE (default-deny, host-network,
audit-scope) and their modes.

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
from webhook.findings.host import WORKLOAD_KINDS, controller_ref, owner_of
from webhook.findings.model import WouldDeny
from webhook.findings.usual_writers import ANY_USER, Writer, controller_writer
from webhook.settings import Mode, Settings

# What each kind's controller creates from its template -> (the kind made, the controller that
# sends its CREATE). A Pod's re-creation is `_pod_writer`'s.
MADE: Mapping[str, tuple[str, str]] = {
    "Deployment": ("ReplicaSet", "deployment-controller"),
    "CronJob": ("Job", "cronjob-controller"),
    "ReplicaSet": ("Pod", "replicaset-controller"),
    "ReplicationController": ("Pod", "replication-controller"),
    "StatefulSet": ("Pod", "statefulset-controller"),
    "DaemonSet": ("Pod", "daemon-set-controller"),
    "Job": ("Pod", "job-controller"),
}
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
    """The requests the cluster sends on its own for one workload object, in the order sent: a
    running Pod's re-creation by whoever made it, else what its controllers make (`made_by`)."""
    if obj.get("kind") != "Pod":
        return made_by(obj)
    meta = _map(obj.get("metadata"))
    namespace = str(meta.get("namespace") or "default")
    metadata: dict[str, Any] = {"namespace": namespace}
    metadata.update(
        {k: meta[k] for k in ("name", "labels", "annotations", "ownerReferences") if k in meta}
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": dict(_map(obj.get("spec"))),
    }
    writer = _pod_writer(meta)
    return (Recreation(writer, create_request(WORKLOAD_KINDS["Pod"], pod, writer)),)


def made_by(obj: Mapping[str, Any], uid: str = UID) -> tuple[Recreation, ...]:
    """The CREATEs `obj`'s controllers send from its template, in the order sent: a Deployment's
    ReplicaSet and that ReplicaSet's Pod, a CronJob's Job and its Pod, the Pod of every other
    kind in `MADE`; none for a Pod."""
    found: list[Recreation] = []
    kind = str(obj.get("kind"))
    while kind in MADE:
        made, controller = MADE[kind]
        obj = _made_from(obj, made)
        writer = controller_writer(controller)
        found.append(Recreation(writer, create_request(WORKLOAD_KINDS[made], obj, writer, uid)))
        kind = made
    return tuple(found)


def _made_from(owner: Mapping[str, Any], made: str) -> dict[str, Any]:
    """The object `owner`'s controller creates from its template, as the controller builds it
    (pkg/controller's GetPodFromTemplate, the deployment and cronjob controllers): the template's
    labels (a Pod's and a Job's annotations too), a controller ownerReference to `owner`, and a
    name the API server generates from `owner`'s (a StatefulSet's Pod is named by its ordinal).
    What the controllers add that no rule reads (pod-template-hash, a Job's scheduled time, a
    ReplicaSet's annotations, the hash in a ReplicaSet's or Job's name) is left out."""
    kind = str(owner.get("kind"))
    meta = _map(owner.get("metadata"))
    name = str(meta.get("name") or meta.get("generateName") or "")
    spec = _map(owner.get("spec"))
    template = _map(spec.get("jobTemplate" if kind == "CronJob" else "template"))
    own = _map(template.get("metadata"))
    keys = ("labels",) if made == "ReplicaSet" else ("labels", "annotations")
    metadata: dict[str, Any] = {
        "namespace": str(meta.get("namespace") or "default"),
        **{key: own[key] for key in keys if isinstance(own.get(key), Mapping)},
        "ownerReferences": [
            {"apiVersion": _api_version(kind), "kind": kind, "name": name, "controller": True}
        ],
    }
    if kind == "StatefulSet":
        metadata["name"] = f"{name}-{_first_ordinal(spec)}"
    else:
        metadata["generateName"] = name if name.endswith("-") else f"{name}-"
    made_spec: dict[str, Any] = dict(_map(template.get("spec")))
    if made == "ReplicaSet":
        made_spec = {
            "replicas": spec.get("replicas", 1),
            "selector": spec.get("selector"),
            "template": template,
        }
    return {"apiVersion": _api_version(made), "kind": made, "metadata": metadata, "spec": made_spec}


def _first_ordinal(spec: Mapping[str, Any]) -> int:
    """A StatefulSet's first Pod's ordinal: `spec.ordinals.start`, else 0."""
    start = _map(spec.get("ordinals")).get("start")
    return start if isinstance(start, int) and not isinstance(start, bool) else 0


def _api_version(kind: str) -> str:
    group, _ = WORKLOAD_KINDS[kind]
    return f"{group}/v1" if group else "v1"


def create_request(
    resource: tuple[str, str], obj: Mapping[str, Any], writer: Writer, uid: str = UID
) -> AdmissionRequest:
    """`writer`'s CREATE of `obj` ((API group, resource), v1) as the API server sends it to a
    validating webhook: a POST to the collection of `obj`'s namespace, with the name `obj` gives
    (the API server takes it from the object; one still to be generated is not known: none)."""
    group, plural = resource
    meta = _map(obj.get("metadata"))
    return AdmissionRequest(
        uid=uid,
        kind=GroupVersionKind(group, "v1", str(obj.get("kind"))),
        resource=GroupVersionResource(group, "v1", plural),
        operation="CREATE",
        user=writer.user,
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        object=obj,
    )


def _pod_writer(meta: Mapping[str, Any]) -> Writer:
    """Who re-creates a running Pod: its controller, its node's kubelet (a static Pod's mirror),
    or, owned by neither, any user."""
    ref = _map(controller_ref(meta))
    kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
    if kind in MADE and MADE[kind][0] == "Pod":
        return controller_writer(MADE[kind][1])
    if kind == "Node" and name:
        node = f"system:node:{name}"
        return Writer(node, UserInfo(node, ("system:nodes", "system:authenticated")))
    return ANY_USER


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
