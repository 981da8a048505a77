"""The golden corpus: AdmissionReviews, each naming the settings, cluster and live source it meets.

Every review has a fixed uid (the case name), so its response and decision-log line are the same
bytes on every run. The cluster is `inputs/state/` (see its comments); the settings are
`inputs/config-*.yaml`. A case is one or more steps against one Runtime, so the remembered-approval
path (an approved removal followed by a decision in the same process) is covered too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from objects import (
    BAD_REVIEWS,
    NETPOL_GVR,
    deny_all,
    netpol,
    netpol_review,
    pod_spec,
    review,
    workload,
    workload_review,
)

V1BETA1 = "admission.k8s.io/v1beta1"
KINDS = (
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
)


@dataclass(frozen=True)
class Step:
    body: bytes
    path: str = "/validate"
    method: str = "POST"


@dataclass(frozen=True)
class ServerCase:
    name: str
    steps: tuple[Step, ...]
    settings: str = "main"  # inputs/config-<settings>.yaml; "defaults" for no file
    view: str = "state"  # state | stale | empty
    live: str = ""  # the confirmer: "" none, "failed", "raises", or a live view's name


def _step(doc: dict[str, Any] | bytes, path: str = "/validate", method: str = "POST") -> Step:
    return Step(doc if isinstance(doc, bytes) else orjson.dumps(doc), path, method)


def _one(name: str, doc: dict[str, Any] | bytes, path: str = "/validate", **kw: str) -> ServerCase:
    return ServerCase(name, (_step(doc, path),), **kw)


def _pod(namespace: str, uid: str, **kw: Any) -> dict[str, Any]:
    return workload_review("Pod", namespace=namespace, uid=uid, **kw)


def _policy(name: str, namespace: str = "team", **kw: Any) -> dict[str, Any]:
    return netpol(name, namespace, created="2026-04-01T00:00:00Z", **kw)


def _create_policy(uid: str, policy: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return netpol_review("CREATE", new=policy, uid=uid, **kw)


def _cidr_peer(*cidrs: str) -> list[dict[str, Any]]:
    return [{"from": [{"ipBlock": {"cidr": c}} for c in cidrs]}]


def _team_fence(name: str = "default-deny", **spec: Any) -> dict[str, Any]:
    created = "2026-03-01T00:00:00Z" if name == "zz-newer" else "2026-01-01T00:00:00Z"
    policy = deny_all(name, "team", created)
    policy["spec"].update(spec)
    return policy


def _workload_cases() -> list[ServerCase]:
    cases = []
    for kind in KINDS:
        slug = kind.lower()
        cases.append(_one(f"create-{slug}-fenced", workload_review(kind, uid=f"create-{slug}")))
        cases.append(
            _one(
                f"create-{slug}-open",
                workload_review(kind, namespace="open", uid=f"create-{slug}-open"),
            )
        )
    host_network = pod_spec(hostNetwork=True)
    host_ports = pod_spec(
        initContainers=[{"name": "init", "image": "i", "ports": [{"hostPort": 8080}]}],
        containers=[
            {"name": "app", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]},
            {"name": "side", "image": "i", "ports": [{"hostPort": 0}, {"hostPort": True}]},
        ],
    )
    generated = workload("Pod", namespace="team")
    generated["metadata"] = {"generateName": "app-", "namespace": "team"}
    return [
        *cases,
        _one("create-pod-ingress-only", _pod("ingress-only", "ingress-only")),
        _one("create-pod-neutralised", _pod("neutral", "neutralised")),
        _one("create-pod-unknown-namespace", _pod("ghost", "unknown-namespace")),
        _one("create-pod-isolating", _pod("isolating", "isolating")),
        _one(
            "create-pod-isolating-strict", _pod("isolating", "isolating-strict"), settings="strict"
        ),
        _one("create-pod-defaults-open", _pod("open", "defaults-open"), settings="defaults"),
        _one(
            "create-pod-scoped-egress-unfenced", _pod("ingress-only", "scoped"), settings="scoped"
        ),
        _one("create-pod-warn-mode", _pod("warnmode", "warn-mode", spec=host_network)),
        _one("create-pod-audit-mode", _pod("auditmode", "audit-mode", spec=host_ports)),
        _one("create-pod-off-mode", _pod("offmode", "off-mode", spec=host_network)),
        _one("create-pod-host-network", _pod("team", "host-network", spec=host_network)),
        _one("create-pod-host-ports", _pod("team", "host-ports", spec=host_ports)),
        _one(
            "create-pod-host-ports-enforced",
            _pod("team", "host-ports-enforced", spec=host_ports),
            settings="strict",
        ),
        _one(
            "create-deployment-host-network-and-port",
            workload_review(
                "Deployment",
                uid="host-both",
                spec=pod_spec(
                    hostNetwork=True, containers=[{"name": "c", "ports": [{"hostPort": 9}]}]
                ),
            ),
        ),
        _one(
            "create-pod-generate-name-open",
            review(
                "CREATE",
                ("", "v1", "pods"),
                "Pod",
                namespace="open",
                obj=generated,
                uid="generated",
            ),
        ),
        _one(
            "create-pod-binding-subresource",
            _pod("open", "binding", sub_resource="binding"),
        ),
        _one("create-pod-dry-run-open", _pod("open", "dry-run", dry_run=True)),
        _one("create-pod-v1beta1-fenced", _pod("team", "v1beta1-allow", api_version=V1BETA1)),
        _one("create-pod-v1beta1-open", _pod("open", "v1beta1-deny", api_version=V1BETA1)),
    ]


def _ratchet_cases() -> list[ServerCase]:
    new_image = pod_spec(containers=[{"name": "app", "image": "registry.example/app:2"}])
    deleting = workload_review(
        "Deployment",
        "UPDATE",
        namespace="open",
        old_spec=pod_spec(),
        spec=new_image,
        uid="deleting",
    )
    deleting["request"]["oldObject"]["metadata"]["deletionTimestamp"] = "2026-05-01T00:00:00Z"
    relabelled = workload_review("Pod", "UPDATE", namespace="open", uid="pod-relabel")
    relabelled["request"]["object"]["metadata"]["labels"] = {"new": "label"}
    scale = review(
        "UPDATE",
        ("apps", "v1", "deployments"),
        "Scale",
        namespace="open",
        name="app",
        obj={"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 3}},
        old={"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 1}},
        sub_resource="scale",
        uid="scale",
    )
    return [
        _one(
            "update-deployment-template-change",
            workload_review(
                "Deployment",
                "UPDATE",
                namespace="open",
                spec=new_image,
                old_spec=pod_spec(),
                uid="template-change",
            ),
        ),
        _one(
            "update-deployment-no-change",
            workload_review("Deployment", "UPDATE", namespace="open", uid="no-change"),
        ),
        _one(
            "update-deployment-status-subresource",
            workload_review(
                "Deployment",
                "UPDATE",
                namespace="open",
                spec=new_image,
                old_spec=pod_spec(),
                sub_resource="status",
                uid="status",
            ),
        ),
        _one("update-deployment-scale", scale),
        _one("update-deployment-being-deleted", deleting),
        _one("update-pod-relabel", relabelled),
        _one(
            "update-pod-spec-change",
            workload_review(
                "Pod",
                "UPDATE",
                namespace="open",
                spec=new_image,
                old_spec=pod_spec(),
                uid="pod-spec",
            ),
        ),
        _one(
            "update-cronjob-template-change",
            workload_review(
                "CronJob",
                "UPDATE",
                namespace="open",
                spec=new_image,
                old_spec=pod_spec(),
                uid="cronjob",
            ),
        ),
        _one(
            "update-deployment-patch-blind",
            workload_review(
                "Deployment",
                "UPDATE",
                namespace="patch-blind",
                spec=new_image,
                old_spec=pod_spec(),
                uid="patch-blind-update",
            ),
        ),
        _one(
            "delete-deployment-open",
            review(
                "DELETE",
                ("apps", "v1", "deployments"),
                "Deployment",
                namespace="open",
                name="app",
                old=workload("Deployment", namespace="open"),
                uid="delete-deployment",
            ),
        ),
    ]


def _namespace_review(operation: str, name: str, uid: str, **kw: Any) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    return review(
        operation,
        ("", "v1", "namespaces"),
        "Namespace",
        namespace="",
        name="" if operation == "CREATE" else name,
        obj=obj,
        old=obj if operation == "UPDATE" else None,
        uid=uid,
        **kw,
    )


def _namespace_cases() -> list[ServerCase]:
    return [
        _one("namespace-create", _namespace_review("CREATE", "brand-new", "ns-create")),
        _one(
            "namespace-create-defaults",
            _namespace_review("CREATE", "brand-new", "ns-defaults"),
            settings="defaults",
        ),
        _one("namespace-create-exempt", _namespace_review("CREATE", "exempt-ns", "ns-exempt")),
        _one("namespace-create-off", _namespace_review("CREATE", "offmode", "ns-off")),
        _one("namespace-update", _namespace_review("UPDATE", "open", "ns-update")),
    ]


def _guard_cases() -> list[ServerCase]:
    solo = deny_all("default-deny", "solo")
    solo_relabelled = deny_all("default-deny", "solo")
    solo_relabelled["metadata"]["labels"] = {"kept": "fencing"}
    solo_weakened = netpol("default-deny", "solo", types=["Ingress"])
    quiet = deny_all("default-deny", "quiet")
    item = netpol_review("DELETE", old=solo, name="", uid="deletecollection-item")
    return [
        _one(
            "guard-delete-oldest-fence",
            netpol_review("DELETE", old=_team_fence(), uid="delete-oldest"),
        ),
        _one(
            "guard-delete-newer-fence",
            netpol_review("DELETE", old=_team_fence("zz-newer"), uid="delete-newer"),
        ),
        _one("guard-delete-last-fence", netpol_review("DELETE", old=solo, uid="delete-last")),
        _one("guard-delete-teardown", netpol_review("DELETE", old=quiet, uid="teardown")),
        _one(
            "guard-update-keeps-fencing",
            netpol_review("UPDATE", new=solo_relabelled, old=solo, uid="keeps-fencing"),
        ),
        _one(
            "guard-update-weakens",
            netpol_review("UPDATE", new=solo_weakened, old=solo, uid="weakens"),
        ),
        _one("guard-deletecollection-item", item),
        _one(
            "guard-delete-not-a-fence",
            netpol_review(
                "DELETE",
                old=netpol(
                    "web-open",
                    selector={"matchLabels": {"app": "web"}},
                    types=["Ingress"],
                    ingress=[{}],
                    created="2026-01-02T00:00:00Z",
                ),
                uid="not-a-fence",
            ),
        ),
        _one(
            "guard-delete-without-old-object",
            netpol_review("DELETE", name="default-deny", uid="no-old-object"),
        ),
        _one(
            "guard-delete-isolating-strict",
            netpol_review(
                "DELETE",
                old=netpol(
                    "isolate",
                    "isolating",
                    types=["Ingress", "Egress"],
                    ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
                ),
                uid="isolating-strict",
            ),
            settings="strict",
        ),
        _one(
            "guard-delete-dry-run",
            netpol_review("DELETE", old=_team_fence(), uid="delete-dry-run", dry_run=True),
        ),
        _one(
            "guard-delete-v1beta1",
            netpol_review("DELETE", old=solo, uid="delete-v1beta1", api_version=V1BETA1),
        ),
        _one(
            "guard-delete-off-mode",
            netpol_review("DELETE", old=deny_all("default-deny", "offmode"), uid="guard-off"),
        ),
    ]


def _allow_all_cases() -> list[ServerCase]:
    everyone: dict[str, Any] = {"ingress": [{}], "types": ["Ingress"]}
    selected: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}}}
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("allow-all-empty-rule", _policy("open-all", **everyone), "main"),
        (
            "allow-all-namespace-selector",
            _policy("ns-all", types=["Ingress"], ingress=[{"from": [{"namespaceSelector": {}}]}]),
            "main",
        ),
        (
            "allow-all-namespace-selector-not-in",
            _policy(
                "ns-most",
                types=["Ingress"],
                ingress=[
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "team", "operator": "NotIn", "values": ["x"]}
                                    ]
                                },
                                "podSelector": {},
                            }
                        ]
                    }
                ],
            ),
            "main",
        ),
        (
            "allow-all-ipv4-everything",
            _policy("v4-all", types=["Ingress"], ingress=_cidr_peer("0.0.0.0/0")),
            "main",
        ),
        (
            "allow-all-ipv6-egress",
            _policy("v6-all", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "::/0"}}]}]),
            "main",
        ),
        (
            "allow-all-cidr-leading-zeros",
            _policy("zeros", types=["Ingress"], ingress=_cidr_peer("000.0.0.0/0")),
            "main",
        ),
        (
            "allow-all-cidr-host-bits",
            _policy("host-bits", types=["Ingress"], ingress=_cidr_peer("10.1.2.3/0")),
            "main",
        ),
        (
            "allow-all-cidr-ipv4-mapped",
            _policy("mapped", types=["Ingress"], ingress=_cidr_peer("::ffff:0.0.0.0/96")),
            "main",
        ),
        (
            "allow-all-cidr-halves",
            _policy("halves", types=["Ingress"], ingress=_cidr_peer("0.0.0.0/1", "128.0.0.0/1")),
            "main",
        ),
        (
            "allow-all-cidr-except",
            _policy(
                "except",
                types=["Ingress"],
                ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}],
            ),
            "main",
        ),
        (
            "allow-all-cidr-garbage",
            _policy(
                "garbage",
                types=["Ingress"],
                ingress=_cidr_peer("everything", "0.0.0.0", "0.0.0.0/x"),
            ),
            "main",
        ),
        (
            "allow-all-named-port",
            _policy("named", types=["Ingress"], ingress=[{"ports": [{"port": "http"}]}]),
            "main",
        ),
        (
            "allow-all-port-range",
            _policy(
                "range",
                types=["Ingress"],
                ingress=[
                    {"ports": [{"port": 1, "endPort": 30000}, {"port": "30001", "endPort": 65535}]}
                ],
            ),
            "main",
        ),
        (
            "allow-all-udp-every-port",
            _policy("udp", types=["Ingress"], ingress=[{"ports": [{"protocol": "UDP"}]}]),
            "main",
        ),
        (
            "allow-all-sctp-only",
            _policy("sctp", types=["Ingress"], ingress=[{"ports": [{"protocol": "SCTP"}]}]),
            "main",
        ),
        ("allow-all-open-namespace", _policy("open-all", "open", **everyone), "main"),
        ("allow-all-warn-mode", _policy("open-all", "warnmode", **everyone), "main"),
        ("allow-all-selected-pods", _policy("web-too", **selected, **everyone), "main"),
        ("allow-all-selected-pods-enforced", _policy("web-too", **selected, **everyone), "strict"),
        (
            "allow-all-selected-pods-off",
            _policy("web-too", "offmode", **selected, **everyone),
            "main",
        ),
        ("allow-all-strict-isolating", _policy("open-all", "isolating", **everyone), "strict"),
        ("allow-all-defaults", _policy("open-all", **everyone), "defaults"),
    ]
    result = [_one(name, _create_policy(name, policy), settings=s) for name, policy, s in cases]
    pooled = netpol("upper-half", "pooled", types=["Ingress"], ingress=_cidr_peer("128.0.0.0/1"))
    already = netpol(
        "allow-all-in",
        "neutral",
        types=["Ingress"],
        ingress=[{}, {"from": []}],
        created="2026-01-02T00:00:00Z",
    )
    widened = _team_fence("zz-newer", ingress=[{}])
    return [
        *result,
        _one("allow-all-pooled-ip-blocks", _create_policy("pooled", pooled)),
        _one(
            "allow-all-update-already-neutralised",
            netpol_review(
                "UPDATE",
                new=already,
                old=netpol(
                    "allow-all-in",
                    "neutral",
                    types=["Ingress"],
                    ingress=[{}],
                    created="2026-01-02T00:00:00Z",
                ),
                uid="already",
            ),
        ),
        _one(
            "allow-all-update-widens-fence",
            netpol_review("UPDATE", new=widened, old=_team_fence("zz-newer"), uid="widens"),
        ),
        _one(
            "allow-all-update-renamed-old",
            netpol_review(
                "UPDATE",
                new=_policy("renamed", **everyone),
                old=_policy("not-in-cache"),
                uid="renamed",
            ),
        ),
        _one(
            "allow-all-create-without-object",
            review("CREATE", NETPOL_GVR, "NetworkPolicy", obj=None, uid="no-object"),
        ),
    ]


def _connect(namespace: str, sub: str, uid: str) -> dict[str, Any]:
    kind = {
        "exec": "PodExecOptions",
        "attach": "PodAttachOptions",
        "portforward": "PodPortForwardOptions",
    }.get(sub, "Status")
    return review(
        "CONNECT",
        ("", "v1", "pods"),
        kind,
        namespace=namespace,
        name="app",
        sub_resource=sub,
        obj={"kind": kind},
        uid=uid,
    )


def _audit_scope_cases() -> list[ServerCase]:
    return [
        _one("audit-scope-create-unaudited", _pod("unaudited", "unaudited")),
        _one(
            "audit-scope-create-patch-blind",
            workload_review("Deployment", namespace="patch-blind", uid="patch-blind"),
        ),
        _one("audit-scope-create-no-complete", _pod("no-complete", "no-complete")),
        _one("audit-scope-connect-exec-fenced", _connect("team", "exec", "exec-ok")),
        _one("audit-scope-connect-exec-blind", _connect("connect-blind", "exec", "exec-blind")),
        _one(
            "audit-scope-connect-attach-blind", _connect("connect-blind", "attach", "attach-blind")
        ),
        _one(
            "audit-scope-connect-portforward",
            _connect("connect-blind", "portforward", "portforward"),
        ),
        _one("audit-scope-connect-proxy", _connect("connect-blind", "proxy", "proxy")),
        _one("audit-scope-below-min-level", _pod("audited", "below-min-level"), settings="scoped"),
        _one(
            "audit-scope-at-min-level",
            workload_review("Deployment", namespace="audited", uid="at-min-level"),
            settings="scoped",
        ),
        _one("audit-scope-selector-skips", _pod("unaudited", "selector-skips"), settings="scoped"),
        _one(
            "audit-scope-selector-unknown-namespace",
            _pod("ghost", "selector-unknown"),
            settings="scoped",
        ),
        _one("audit-scope-warn-mode", _pod("warnmode", "scope-warn")),
        _one("audit-scope-audit-mode", _pod("auditmode", "scope-audit")),
        _one("audit-scope-no-policy", _pod("unaudited", "no-policy"), settings="strict"),
    ]


def _exemption_cases() -> list[ServerCase]:
    return [
        _one("exempt-user", _pod("open", "exempt-user", user="ci-bot")),
        _one(
            "exempt-group",
            _pod("open", "exempt-group", groups=["system:authenticated", "platform-admins"]),
        ),
        _one("exempt-namespace", _pod("exempt-ns", "exempt-namespace")),
        _one(
            "exempt-kube-system-defaults",
            _pod("kube-system", "exempt-kube-system"),
            settings="defaults",
        ),
        # A Terminating namespace exempts only the namespace controller's deletions.
        _one("terminating-namespace-judged", _pod("dying", "exempt-terminating")),
        _one(
            "exempt-terminating-netpol-delete",
            netpol_review(
                "DELETE",
                old=deny_all("default-deny", "dying"),
                uid="exempt-dying-netpol",
                user="system:serviceaccount:kube-system:namespace-controller",
            ),
        ),
    ]


def _other_cases() -> list[ServerCase]:
    configmap = review(
        "CREATE",
        ("", "v1", "configmaps"),
        "ConfigMap",
        namespace="open",
        obj={"kind": "ConfigMap", "metadata": {"name": "cm"}},
        uid="configmap",
    )
    status = netpol_review(
        "UPDATE", new=_team_fence(), old=_team_fence(), sub_resource="status", uid="netpol-status"
    )
    service = review(
        "CREATE", ("", "v1", "services"), "Service", namespace="", obj=None, uid="cluster-scoped"
    )
    bad = [
        Step(body)
        for body, _ in BAD_REVIEWS
        if len(body) < 1000  # the nesting bomb is 10 kB of brackets: its answer is in the others
    ]
    return [
        _one("unknown-resource-configmap", configmap),
        _one("unknown-netpol-status-subresource", status),
        _one("unknown-no-object", service),
        ServerCase("bad-requests", tuple(bad)),
        ServerCase(
            "http-errors",
            (
                _step(b"", "/validate", "GET"),
                _step(b"{}", "/elsewhere", "POST"),
                _step(b"", "/healthz", "GET"),
                _step(b"", "/readyz", "GET"),
            ),
        ),
        _one("body-too-large", _pod("open", "x" * 9000), settings="strict"),
        _one("stale-cache-denies", _pod("team", "stale-deny"), view="stale"),
        _one("stale-cache-allowed", _pod("team", "stale-allow"), settings="strict", view="stale"),
        _one("stale-cache-live-read", _pod("team", "stale-live"), view="stale", live="state"),
        _one(
            "stale-cache-netpol-delete",
            netpol_review("DELETE", old=_team_fence("zz-newer"), uid="stale-netpol"),
            view="stale",
        ),
        _one("empty-view-denies", _pod("team", "empty-view"), view="empty"),
    ]


def _live_cases() -> list[ServerCase]:
    newer = netpol_review("DELETE", old=_team_fence("zz-newer"), uid="live-newer")
    return [
        _one("live-denial-overturned", _pod("open", "live-overturned"), live="open-fenced"),
        _one(
            "live-denial-stands-on-failed-read", _pod("open", "live-failed-denial"), live="failed"
        ),
        _one("live-removal-refused", newer, live="team-oldest-gone"),
        _one("live-removal-unconfirmed", newer, live="failed"),
        _one("live-removal-confirmed", newer, live="state"),
        _one(
            "live-teardown-refused",
            netpol_review("DELETE", old=deny_all("default-deny", "quiet"), uid="live-teardown"),
            live="quiet-busy",
        ),
        _one("live-allowed-workload-no-read", _pod("team", "live-no-read"), live="failed"),
        _one(
            "live-timeout-query",
            _pod("open", "live-timeout"),
            "/validate?timeout=1s",
            live="failed",
        ),
        _one(
            "live-timeout-query-bad",
            _pod("open", "live-timeout-bad"),
            "/validate?timeout=soon",
            live="failed",
        ),
        _one(
            "live-timeout-query-long",
            _pod("open", "live-timeout-long"),
            "/validate?timeout=30s",
            live="failed",
        ),
        _one(
            "live-allow-all-no-read",
            _create_policy(
                "live-allow-all-open", _policy("open-all", "open", ingress=[{}], types=["Ingress"])
            ),
            live="failed",
        ),
        _one(
            "live-allow-all-denial-stands",
            _create_policy(
                "live-allow-all-failed", _policy("open-all", ingress=[{}], types=["Ingress"])
            ),
            live="failed",
        ),
        _one(
            "live-allow-all-overturned",
            _create_policy("live-allow-all", _policy("open-all", ingress=[{}], types=["Ingress"])),
            live="team-unfenced",
        ),
        _one("live-internal-error", _pod("open", "live-internal-error"), live="raises"),
    ]


def _sequence_cases() -> list[ServerCase]:
    quiet = deny_all("default-deny", "quiet")
    pod = _pod("quiet", "quiet-pod")
    weakened = netpol("zz-newer", "team", types=["Ingress"], created="2026-03-01T00:00:00Z")
    return [
        ServerCase(
            "remembered-teardown",
            (
                _step(netpol_review("DELETE", old=quiet, uid="quiet-dry", dry_run=True)),
                _step(pod),
                _step(netpol_review("DELETE", old=quiet, uid="quiet-delete")),
                _step(pod),
            ),
        ),
        ServerCase(
            "remembered-newer-removal",
            (
                _step(netpol_review("DELETE", old=_team_fence("zz-newer"), uid="seq-newer")),
                _step(netpol_review("DELETE", old=_team_fence(), uid="seq-oldest")),
                _step(_pod("team", "seq-pod")),
            ),
        ),
        ServerCase(
            "remembered-weakening-update",
            (
                _step(
                    netpol_review(
                        "UPDATE", new=weakened, old=_team_fence("zz-newer"), uid="seq-weaken"
                    )
                ),
                _step(
                    netpol_review(
                        "UPDATE",
                        new=netpol("default-deny", "team", types=["Ingress"]),
                        old=_team_fence(),
                        uid="seq-weaken-oldest",
                    )
                ),
                _step(
                    _create_policy(
                        "seq-allow-all", _policy("open-all", types=["Ingress"], ingress=[{}])
                    )
                ),
            ),
        ),
        ServerCase(
            "remembered-then-live-read",
            (
                _step(netpol_review("DELETE", old=quiet, uid="seq-live-delete")),
                _step(_pod("quiet", "seq-live-pod")),
            ),
            live="state",
        ),
    ]


def server_cases() -> list[ServerCase]:
    cases = [
        *_workload_cases(),
        *_ratchet_cases(),
        *_namespace_cases(),
        *_guard_cases(),
        *_allow_all_cases(),
        *_audit_scope_cases(),
        *_exemption_cases(),
        *_other_cases(),
        *_live_cases(),
        *_sequence_cases(),
    ]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# `kubefence review` on stdin: (case, review, extra arguments).
REVIEW_STATE = ["--state", "inputs/state"]
REVIEW_MAIN = [*REVIEW_STATE, "--config", "inputs/config-main.yaml"]
REVIEW_CASES: list[tuple[str, bytes, list[str]]] = [
    ("fenced-pod", orjson.dumps(_pod("team", "cli-fenced")), REVIEW_MAIN),
    (
        "open-deployment",
        orjson.dumps(workload_review("Deployment", namespace="open", uid="cli-open")),
        REVIEW_MAIN,
    ),
    (
        "warn-mode",
        orjson.dumps(_pod("warnmode", "cli-warn", spec=pod_spec(hostNetwork=True))),
        REVIEW_MAIN,
    ),
    (
        "oldest-fence-delete",
        orjson.dumps(netpol_review("DELETE", old=_team_fence(), uid="cli-oldest")),
        REVIEW_MAIN,
    ),
    ("audit-scope", orjson.dumps(_pod("unaudited", "cli-unaudited")), REVIEW_MAIN),
    (
        "strict",
        orjson.dumps(_pod("isolating", "cli-strict")),
        [*REVIEW_STATE, "--config", "inputs/config-strict.yaml"],
    ),
    ("v1beta1", orjson.dumps(_pod("open", "cli-v1beta1", api_version=V1BETA1)), REVIEW_STATE),
    ("no-state", orjson.dumps(_pod("team", "cli-no-state")), []),
    ("not-json", b"{not json", REVIEW_STATE),
    ("bad-review", orjson.dumps({"kind": "AdmissionReview", "apiVersion": "v1"}), REVIEW_STATE),
    (
        "bad-config",
        orjson.dumps(_pod("team", "cli-bad-config")),
        [*REVIEW_STATE, "--config", "inputs/config-bad.yaml"],
    ),
    ("missing-file", b"", [*REVIEW_STATE, "inputs/missing.json"]),
    (
        "missing-state",
        orjson.dumps(_pod("team", "cli-missing-state")),
        ["--state", "inputs/nowhere"],
    ),
]

# `kubefence scan --state inputs/state`: (case, extra arguments).
SCAN_CASES: list[tuple[str, list[str]]] = [
    ("defaults-table", []),
    ("defaults-json", ["--format", "json"]),
    ("defaults-fix", ["--fix"]),
    ("main-table", ["--config", "inputs/config-main.yaml"]),
    ("main-json", ["--config", "inputs/config-main.yaml", "--format", "json"]),
    ("main-fix", ["--config", "inputs/config-main.yaml", "--fix"]),
    ("strict-table", ["--config", "inputs/config-strict.yaml"]),
    ("strict-json", ["--config", "inputs/config-strict.yaml", "--format", "json"]),
    ("strict-fix", ["--config", "inputs/config-strict.yaml", "--fix"]),
    ("scoped-table", ["--config", "inputs/config-scoped.yaml"]),
    ("scoped-json", ["--config", "inputs/config-scoped.yaml", "--format", "json"]),
    ("main-policyreport", ["--config", "inputs/config-main.yaml", "--format", "policyreport"]),
    ("main-openreports", ["--config", "inputs/config-main.yaml", "--format", "openreports"]),
]

# `kubefence correlate` over tests/unit/fixtures/correlate: (case, extra arguments).
_FIXTURES = "../unit/fixtures/correlate"
_OUTAGE = [
    "--audit-log",
    f"{_FIXTURES}/outage.audit.log",
    "--decision-log",
    f"{_FIXTURES}/outage.decisions.log",
]
_EDGE = [
    "--audit-log",
    f"{_FIXTURES}/edge.audit.log",
    "--decision-log",
    f"{_FIXTURES}/edge.decisions.log",
]
CORRELATE_CASES: list[tuple[str, list[str]]] = [
    ("outage-text", _OUTAGE),
    ("outage-json", [*_OUTAGE, "--format", "json"]),
    ("outage-html", [*_OUTAGE, "--format", "html"]),
    ("edge-text", _EDGE),
    ("edge-json", [*_EDGE, "--format", "json"]),
    ("edge-html", [*_EDGE, "--format", "html"]),
    ("both-text", [*_OUTAGE, *_EDGE]),
    (
        "outage-limited-text",
        [*_OUTAGE, "--max-items", "1", "--probe-threshold", "2", "--probe-window", "1m"],
    ),
    ("outage-config-json", [*_OUTAGE, "--config", "inputs/config-main.yaml", "--format", "json"]),
    # the recorded cluster's own config: requests before registration, and while it was deleted
    ("outage-registered-text", [*_OUTAGE, "--config", f"{_FIXTURES}/config.yaml"]),
    ("edge-registered-json", [*_EDGE, "--config", f"{_FIXTURES}/config.yaml", "--format", "json"]),
    (
        "outage-window-text",
        [
            *_OUTAGE,
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2100-01-01T00:00:00Z",
            "--join-window",
            "10s",
            "--clock-skew",
            "0.5s",
        ],
    ),
    ("bad-since", [*_OUTAGE, "--since", "yesterday"]),
    (
        "missing-log",
        ["--audit-log", "inputs/missing.log", "--decision-log", f"{_FIXTURES}/edge.decisions.log"],
    ),
    (
        "swapped-logs",
        [
            "--audit-log",
            f"{_FIXTURES}/edge.decisions.log",
            "--decision-log",
            f"{_FIXTURES}/edge.audit.log",
        ],
    ),
    (
        "no-overlap-text",
        [
            "--audit-log",
            f"{_FIXTURES}/outage.audit.log",
            "--decision-log",
            f"{_FIXTURES}/edge.decisions.log",
        ],
    ),
]
