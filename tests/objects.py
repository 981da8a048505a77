"""Builders for the Kubernetes objects and AdmissionReviews the tests feed kubefence.

Shapes follow what kube-apiserver sends (docs/kubernetes-facts.md, "Admission and webhooks"):
DELETE carries `oldObject`, `requestResource` is the URL's resource, a deletecollection item has
an empty `name`.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from webhook.admission import AdmissionRequest, parse_review

_uids = itertools.count(1)

WORKLOAD_GVR = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
}


def pod_spec(**extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "app", "image": "registry.example/app:1"}], **extra}


def workload(
    kind: str, name: str = "app", namespace: str = "team", spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A workload object of `kind` whose pod spec is `spec`."""
    spec = spec if spec is not None else pod_spec()
    group, version, _ = WORKLOAD_GVR[kind]
    meta = {"name": name, "namespace": namespace}
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    if kind == "Pod":
        body: dict[str, Any] = {"spec": spec}
    elif kind == "CronJob":
        body = {"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}
    else:
        body = {"spec": {"selector": {"matchLabels": {"app": name}}, "template": template}}
    return {"apiVersion": f"{group}/{version}".lstrip("/"), "kind": kind, "metadata": meta, **body}


def netpol(
    name: str = "default-deny",
    namespace: str = "team",
    *,
    selector: dict[str, Any] | None = None,
    types: list[str] | None = None,
    ingress: list[Any] | None = None,
    egress: list[Any] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    uid: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector if selector is not None else {}}
    if types is not None:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": created,
            "uid": uid or f"uid-{namespace}-{name}",
        },
        "spec": spec,
    }


def deny_all(
    name: str = "default-deny", namespace: str = "team", created: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    return netpol(name, namespace, types=["Ingress", "Egress"], created=created)


def review(
    operation: str,
    gvr: tuple[str, str, str],
    kind: str,
    *,
    namespace: str = "team",
    name: str = "",
    obj: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    sub_resource: str = "",
    user: str = "alice",
    groups: list[str] | None = None,
    dry_run: bool = False,
    api_version: str = "admission.k8s.io/v1",
    uid: str | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as kube-apiserver sends it."""
    group, version, resource = gvr
    request: dict[str, Any] = {
        "uid": uid or f"uid-{next(_uids)}",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {
            "username": user,
            "groups": groups if groups is not None else ["system:authenticated"],
        },
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    if name:
        request["name"] = name
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def workload_review(
    kind: str,
    operation: str = "CREATE",
    *,
    namespace: str = "team",
    spec: dict[str, Any] | None = None,
    old_spec: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    obj = workload(kind, namespace=namespace, spec=spec)
    old = workload(kind, namespace=namespace, spec=old_spec) if old_spec is not None else None
    if operation == "UPDATE" and old is None:
        old = workload(kind, namespace=namespace, spec=spec)
    name = kw.pop("name", "" if operation == "CREATE" else "app")
    return review(
        operation, WORKLOAD_GVR[kind], kind, namespace=namespace, name=name, obj=obj, old=old, **kw
    )


NETPOL_GVR = ("networking.k8s.io", "v1", "networkpolicies")


def netpol_review(
    operation: str,
    *,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    name: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    target = new or old or {}
    namespace = target.get("metadata", {}).get("namespace", "team")
    if name is None:
        name = "" if operation == "CREATE" else target.get("metadata", {}).get("name", "")
    return review(
        operation,
        NETPOL_GVR,
        "NetworkPolicy",
        namespace=namespace,
        name=name,
        obj=new,
        old=old,
        **kw,
    )


def parse(doc: dict[str, Any]) -> AdmissionRequest:
    return parse_review(orjson.dumps(doc))


def review_body(mutate: Any = None, **top: Any) -> bytes:
    doc = workload_review("Pod")
    doc.update(top)
    if mutate:
        mutate(doc["request"])
    return orjson.dumps(doc)


def test_a_review_as_the_api_server_sends_it_parses() -> None:
    request = parse_review(review_body())
    assert request.operation == "CREATE"
    assert request.kind.kind == "Pod"
    assert request.resource.resource == "pods"
    assert request.user.groups == ("system:authenticated",)


def nest(depth: int) -> bytes:
    return (
        b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":'
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


# Malformed bodies and the one-line reason each is refused with (HTTP 400).
BAD_REVIEWS = [
    (b"not json", "body is not valid JSON"),
    (b"", "body is not valid JSON"),
    (b"[]", "body must be a JSON object"),
    (
        b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":"\xff\xfe"}',
        "body is not valid JSON",
    ),
    (nest(5000), "body is not valid JSON"),
    (review_body(kind="Pod"), "kind must be AdmissionReview"),
    (review_body(apiVersion="admission.k8s.io/v2"), "apiVersion must be"),
    (review_body(request=None), "request must be an object"),
    (review_body(lambda r: r.pop("uid")), "request.uid must be a non-empty string"),
    (review_body(lambda r: r.update(uid=7)), "request.uid must be a non-empty string"),
    (review_body(lambda r: r.update(operation="PATCH")), "request.operation must be one of"),
    (review_body(lambda r: r.update(kind="Pod")), "request.kind must be an object"),
    (
        review_body(lambda r: r.update(resource={"group": 1})),
        "request.resource.group must be a string",
    ),
    (
        review_body(lambda r: r.update(userInfo={"username": "a", "groups": "g"})),
        "request.userInfo.groups must be a list of strings",
    ),
    (review_body(lambda r: r.update(namespace=["x"])), "request.namespace must be a string"),
    (review_body(lambda r: r.update(object="pod")), "request.object must be an object or null"),
    (review_body(lambda r: r.update(dryRun="yes")), "request.dryRun must be a boolean"),
]
