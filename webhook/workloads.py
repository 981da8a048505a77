"""Workload kinds and their pod templates, and the Pod-Security-style UPDATE ratchet.

A workload is judged on CREATE, and on UPDATE only when the request has no subresource, the old
object is not being deleted, and the pod template changed: metadata, status, scale and finalizer
updates pass, so controllers keep working where the rules would deny new Pods. One subresource
update is judged: `pods/ephemeralcontainers` (what `kubectl debug` PATCHes) when it adds or
changes an ephemeral container, since that starts a new process in the pod; as in Pod Security
Admission's `isSignificantPodUpdate`, the whole new pod is judged then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.admission import AdmissionRequest

# (API group, resource) -> path to the pod template's spec holder within the object.
WORKLOAD_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): (),
    ("", "replicationcontrollers"): ("spec", "template"),
    ("apps", "deployments"): ("spec", "template"),
    ("apps", "replicasets"): ("spec", "template"),
    ("apps", "statefulsets"): ("spec", "template"),
    ("apps", "daemonsets"): ("spec", "template"),
    ("batch", "jobs"): ("spec", "template"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template"),
}

EPHEMERAL_CONTAINERS = "ephemeralcontainers"


def is_namespace(request: AdmissionRequest) -> bool:
    return request.resource.group == "" and request.resource.resource == "namespaces"


def is_network_policy(request: AdmissionRequest) -> bool:
    return (
        request.resource.group == "networking.k8s.io"
        and request.resource.resource == "networkpolicies"
        and not request.sub_resource
    )


def is_workload(request: AdmissionRequest) -> bool:
    return (request.resource.group, request.resource.resource) in WORKLOAD_TEMPLATES


def is_ephemeral_update(request: AdmissionRequest) -> bool:
    """An UPDATE of `pods/ephemeralcontainers`: its object is the whole Pod."""
    return (
        request.operation == "UPDATE"
        and request.resource.group == ""
        and request.resource.resource == "pods"
        and request.sub_resource == EPHEMERAL_CONTAINERS
    )


def pod_template(request: AdmissionRequest, obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The pod template of a workload object; {} when absent.

    A Pod's "template" is its spec alone: label and annotation edits of a running Pod start nothing.
    """
    kind = (request.resource.group, request.resource.resource)
    path = WORKLOAD_TEMPLATES.get(kind)
    if kind == ("", "pods"):
        spec = obj.get("spec") if isinstance(obj, Mapping) else None
        return {"spec": spec} if isinstance(spec, Mapping) else {}
    node: object = obj
    for key in path or ():
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def pod_spec_path(request: AdmissionRequest) -> str:
    """Where the pod spec lies in the request's object, as a field path: `spec` for a Pod,
    `spec.template.spec` for a Deployment, `spec.jobTemplate.spec.template.spec` for a CronJob."""
    path = WORKLOAD_TEMPLATES.get((request.resource.group, request.resource.resource), ())
    return ".".join((*path, "spec"))


def pod_spec(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec inside a pod template; {} when absent."""
    spec = template.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def ratchet(
    request: AdmissionRequest,
    template: Mapping[str, Any],
    old_template: Mapping[str, Any] | None,
) -> tuple[bool, str]:
    """Whether a workload request is judged by the fence rules, and why not when it is not.

    `template` and `old_template` are the pod templates of `object` and `oldObject`, walked once
    by the caller (`old_template` is only read on UPDATE). An ephemeral-container update is
    judged even on a Pod being deleted: the debug container runs during its grace period.
    """
    if request.operation == "CREATE":
        if request.sub_resource:
            return False, f"{request.sub_resource} subresource"
        return True, ""
    if request.operation != "UPDATE":
        return False, f"{request.operation} is not judged"
    if is_ephemeral_update(request):
        if _ephemeral_changed(template, old_template):
            return True, ""
        return False, "no ephemeral container added or changed (ephemeralcontainers subresource)"
    if request.sub_resource:
        return False, "no pod template change (subresource update)"
    old_meta = (request.old_object or {}).get("metadata")
    if isinstance(old_meta, Mapping) and old_meta.get("deletionTimestamp"):
        return False, "no pod template change (object is being deleted)"
    if template == old_template:
        return False, "no pod template change"
    return True, ""


def _ephemeral_changed(template: Mapping[str, Any], old_template: Mapping[str, Any] | None) -> bool:
    """Whether an ephemeral container was added or changed, matched by name as PSA does."""
    old = {
        c.get("name"): c for c in _ephemeral(old_template or {}) if isinstance(c.get("name"), str)
    }
    return any(old.get(c.get("name")) != c for c in _ephemeral(template))


def _ephemeral(template: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = pod_spec(template).get("ephemeralContainers")
    return [c for c in items if isinstance(c, Mapping)] if isinstance(items, list) else []
