"""Over generated clusters, `kubefence scan` lists a workload as would-deny exactly when enforce
denies its re-creation: the `review` (the CLI, under the config the chart renders for `mode:
enforce`) of each request its controller sends next.

The clusters mix namespaces fenced, unfenced, fenced for Ingress only, neutralised by an allow-all
policy, Terminating, exempt, and named by workloads alone (a `--state` folder without the
Namespace); workloads of every kind with and without a way onto the node (denied and warned ones),
Pods owned by each controller, by a node (a static Pod's mirror) or by none, finished Pods and
completed Jobs; audit Policies that leave a namespace, a controller's Pods, a Deployment's
ReplicaSets or patch unaudited, with and without a namespaceSelector; exempt users and groups;
per-namespace overrides; the chart's `mode` as warn, audit or enforce, with knobs its `config:`
turns off. The reviews are built here, as the API server sends a controller's CREATE, not by
scan's own code.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from objects import deny_all, netpol

from webhook.cli import main

POOL = ("a", "b", "c", "d")
SHAPES = ("fenced", "unfenced", "ingress-only", "neutralised", "terminating", "missing")
KINDS = (
    "Pod",
    "ReplicaSet",
    "ReplicationController",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
)
# The pod-spec changes: none, denied ways onto the node, warned ones.
ESCAPES: dict[str, dict[str, Any]] = {
    "none": {},
    "hostNetwork": {"hostNetwork": True},
    "privileged": {
        "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
    },
    "hostPort": {
        "containers": [
            {"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}
        ]
    },
    "procMount": {"volumes": [{"name": "p", "hostPath": {"path": "/proc"}}]},
    "logs": {"volumes": [{"name": "l", "hostPath": {"path": "/var/log"}}]},
    "probeHost": {
        "containers": [
            {
                "name": "c",
                "image": "x",
                "readinessProbe": {"tcpSocket": {"port": 80, "host": "10.0.0.1"}},
            }
        ]
    },
}
# Who owns a Pod (its ownerReferences' controller): the writer of its re-creation.
OWNERS = ("", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "ReplicationController", "Node")
SA = "system:serviceaccount:kube-system:"
ANYONE = "someone"  # a Pod no controller owns is re-created by a user
MAKERS = {
    "ReplicaSet": SA + "replicaset-controller",
    "ReplicationController": SA + "replication-controller",
    "StatefulSet": SA + "statefulset-controller",
    "DaemonSet": SA + "daemon-set-controller",
    "Job": SA + "job-controller",
}
CONTROLLER_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:kube-system"]
AUDIT_POLICIES: dict[str, list[dict[str, Any]]] = {
    "dark-namespace": [{"level": "None", "namespaces": ["c"]}],
    "job-pods": [
        {"level": "None", "users": [SA + "job-controller"], "resources": [{"resources": ["pods"]}]}
    ],
    "replicasets-incomplete": [
        {
            "level": "Metadata",
            "omitStages": ["ResponseComplete"],
            "resources": [{"group": "apps", "resources": ["replicasets"]}],
        }
    ],
    "patch-blind": [{"level": "None", "verbs": ["patch"], "namespaces": ["b"]}],
}
# What the chart's `mode` renders for each knob (charts/kubefence/templates/_helpers.tpl;
# test_scan_gate checks scan's own table against helm's rendering).
ENFORCING = ("mode", "hostPID", "hostPIDPtrace", "hostPath", "privileged", "capabilities")
CHART = {"enforce": ("enforce", "warn"), "warn": ("warn", "warn"), "audit": ("audit", "audit")}
TWEAKS: dict[str, dict[str, Any]] = {  # knobs the chart's `config:` turns off
    "none": {},
    "no-privileged": {"hostNetwork": {"privileged": "off"}},
    "no-default-deny": {"defaultDeny": {"mode": "off"}},
    "no-host-network": {"hostNetwork": {"mode": "off"}},
}
OVERRIDES = (
    {"defaultDeny": "warn"},
    {"defaultDeny": "off"},
    {"hostNetwork": "off", "privileged": "off"},
    {"auditScope": "off"},
    {"auditScope": "warn", "hostPath": "audit"},
)


def chart_config(mode: str, tweak: str, rest: dict[str, Any]) -> dict[str, Any]:
    """The config the chart renders for `mode`, with the tweak's knobs merged over it."""
    strong, weak = CHART[mode]
    rest = dict(rest)
    host = {("mode" if k == "mode" else k): strong for k in ENFORCING}
    host.update(probeHost=strong, hostPort=weak, otherHostPaths=weak)
    config: dict[str, Any] = {
        "defaultDeny": {"mode": strong, "allowAll": strong, "allowAllSelected": weak},
        "hostNetwork": host,
        "auditScope": {"mode": strong, **rest.pop("auditScope", {})},
        **rest,
    }
    for section, knobs in TWEAKS[tweak].items():
        config[section] = {**config[section], **knobs}
    return config


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True))
    shapes = {n: draw(st.sampled_from(("fenced", "fenced", *SHAPES))) for n in names}
    labelled = draw(st.sets(st.sampled_from(names)))
    workloads = []
    for i in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from((*KINDS, "Pod", "Pod")))
        workloads.append(
            {
                "kind": kind,
                "name": f"w{i}",
                "namespace": draw(st.sampled_from([*names, *names, "kube-system"])),
                "escape": draw(st.sampled_from(list(ESCAPES))),
                "owner": draw(st.sampled_from(OWNERS)) if kind == "Pod" else "",
                "finished": kind in ("Pod", "Job") and draw(st.sampled_from((False, False, True))),
            }
        )
    policy = draw(st.sampled_from([None, *AUDIT_POLICIES]))
    return {
        "shapes": shapes,
        "labelled": labelled,
        "workloads": workloads,
        "policy": policy,
        "selector": policy is not None and draw(st.booleans()),
        "mode": draw(st.sampled_from(list(CHART))),
        "tweak": draw(st.sampled_from(list(TWEAKS))),
        "exempt_namespace": draw(st.sampled_from([None, *names])),
        "exempt_user": draw(st.sampled_from([None, *MAKERS.values(), SA + "cronjob-controller"])),
        "exempt_group": draw(st.sampled_from([None, "system:nodes"])),
        "overrides": {
            n: draw(st.sampled_from(OVERRIDES)) for n in draw(st.sets(st.sampled_from(names)))
        },
    }


# --- the cluster as manifests -------------------------------------------------------------------


def namespace_objects(name: str, shape: str, labelled: bool) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    if shape != "missing":
        meta: dict[str, Any] = {"name": name}
        if labelled:
            meta["labels"] = {"audited": "yes"}
        phase = "Terminating" if shape == "terminating" else "Active"
        objects.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "status": {"phase": phase}}
        )
    if shape in ("fenced", "neutralised", "terminating"):
        objects.append(deny_all(namespace=name))
    if shape == "ingress-only":
        objects.append(netpol("default-deny", name, types=["Ingress"]))
    if shape == "neutralised":
        objects.append(netpol("allow-everything", name, types=["Ingress"], ingress=[{}]))
    return objects


def pod_spec(escape: str) -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": "x"}], **ESCAPES[escape]}


def workload_object(w: dict[str, Any]) -> dict[str, Any]:
    kind, name, ns = w["kind"], w["name"], w["namespace"]
    spec, labels = pod_spec(w["escape"]), {"app": name}
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    template = {"metadata": {"labels": labels}, "spec": spec}
    group = {
        "Deployment": "apps/v1",
        "ReplicaSet": "apps/v1",
        "StatefulSet": "apps/v1",
        "DaemonSet": "apps/v1",
        "Job": "batch/v1",
        "CronJob": "batch/v1",
    }.get(kind, "v1")
    obj: dict[str, Any] = {"apiVersion": group, "kind": kind, "metadata": meta}
    if kind == "Pod":
        meta["labels"] = labels
        if w["owner"]:
            owner = "node-1" if w["owner"] == "Node" else "owner"
            meta["ownerReferences"] = [{"kind": w["owner"], "name": owner, "controller": True}]
        obj["spec"] = spec
        obj["status"] = {"phase": "Succeeded" if w["finished"] else "Running"}
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        obj["spec"] = {"selector": {"matchLabels": labels}, "template": template}
        if kind == "Job" and w["finished"]:
            obj["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    return obj


# --- the oracle: what the API server sends, and what review answers ------------------------------


def next_requests(w: dict[str, Any]) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """(resource, user, groups, object) of each CREATE the cluster sends next for `w`; none
    when it sends nothing (a finished Pod or Job)."""
    kind, name, ns = w["kind"], w["name"], w["namespace"]
    if w["finished"]:
        return []
    controller_groups = [*CONTROLLER_GROUPS, "system:authenticated"]

    def pod(user: str, groups: list[str], meta: dict[str, Any]) -> tuple[Any, ...]:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**meta, "namespace": ns},
            "spec": pod_spec(w["escape"]),
        }
        return ("pods", user, groups, body)

    template_meta = {"generateName": f"{name}-", "labels": {"app": name}}
    if kind == "Pod":
        owner = w["owner"]
        if owner == "Node":
            user, groups = "system:node:node-1", ["system:nodes", "system:authenticated"]
        elif owner:
            user, groups = MAKERS[owner], controller_groups
        else:
            user, groups = ANYONE, ["system:authenticated"]
        return [pod(user, groups, {"name": name, "labels": {"app": name}})]
    if kind in MAKERS:
        return [pod(MAKERS[kind], controller_groups, template_meta)]
    obj = workload_object(w)
    if kind == "Deployment":
        replica_set = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {**template_meta, "namespace": ns},
            "spec": obj["spec"],
        }
        return [
            ("apps/replicasets", SA + "deployment-controller", controller_groups, replica_set),
            pod(MAKERS["ReplicaSet"], controller_groups, template_meta),
        ]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**template_meta, "namespace": ns},
        "spec": obj["spec"]["jobTemplate"]["spec"],
    }
    return [
        ("batch/jobs", SA + "cronjob-controller", controller_groups, job),
        pod(MAKERS["Job"], controller_groups, template_meta),
    ]


def admission_review(
    resource: str, user: str, groups: list[str], obj: dict[str, Any]
) -> dict[str, Any]:
    group, _, plural = resource.rpartition("/")
    version = "v1"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "property",
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": plural},
            "operation": "CREATE",
            "userInfo": {"username": user, "groups": groups},
            "namespace": obj["metadata"]["namespace"],
            "object": obj,
            "dryRun": False,
        },
    }


@contextmanager
def captured() -> Iterator[io.TextIOWrapper]:
    """stdout (text and bytes) and stderr of the CLI, in memory."""
    out, err = io.TextIOWrapper(io.BytesIO()), io.TextIOWrapper(io.BytesIO())
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out
    finally:
        sys.stdout, sys.stderr = saved


def cli(args: list[str]) -> tuple[int, str]:
    with captured() as out:
        code = main(args)
        out.flush()
        out.seek(0)
        return code, out.read()


PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(clusters())
def test_scan_lists_a_workload_exactly_when_enforce_denies_its_re_creation(
    cluster: dict[str, Any],
) -> None:
    with tempfile.TemporaryDirectory(prefix="kubefence-gate-") as tmp:
        root = Path(tmp)
        state = root / "state"
        state.mkdir()
        objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}]
        for name, shape in cluster["shapes"].items():
            objects += namespace_objects(name, shape, name in cluster["labelled"])
        objects += [workload_object(w) for w in cluster["workloads"]]
        (state / "cluster.yaml").write_text(yaml.safe_dump_all(objects))

        rest: dict[str, Any] = {
            "exemptions": {
                "namespaces": ["kube-system", *filter(None, [cluster["exempt_namespace"]])],
                "users": list(filter(None, [cluster["exempt_user"]])),
                "groups": list(filter(None, [cluster["exempt_group"]])),
            },
            "overrides": [{"namespaces": [n], **o} for n, o in cluster["overrides"].items()],
        }
        if cluster["policy"] is not None:
            rules = [*AUDIT_POLICIES[cluster["policy"]], {"level": "Metadata"}]
            policy = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules}
            (root / "audit.yaml").write_text(yaml.safe_dump(policy))
            scope: dict[str, Any] = {"policyFile": "audit.yaml"}
            if cluster["selector"]:
                scope["namespaceSelector"] = {"matchLabels": {"audited": "yes"}}
            rest["auditScope"] = scope
        configured, enforced = root / "configured.yaml", root / "enforce.yaml"
        configured.write_text(yaml.safe_dump(chart_config(cluster["mode"], cluster["tweak"], rest)))
        enforced.write_text(yaml.safe_dump(chart_config("enforce", cluster["tweak"], rest)))

        code, out = cli(
            ["scan", "--state", str(state), "--config", str(configured), "--format", "json"]
        )
        listed = {
            (d["namespace"], d["object"], d["resource"], d["writer"])
            for d in json.loads(out)["wouldDeny"]
        }

        denied = set()
        terminating = {n for n, s in cluster["shapes"].items() if s == "terminating"}
        for w in cluster["workloads"]:
            if w["namespace"] in terminating:
                continue  # NamespaceLifecycle refuses creates there before any webhook
            for resource, user, groups, obj in next_requests(w):
                review = root / "review.json"
                review.write_text(json.dumps(admission_review(resource, user, groups, obj)))
                verdict, _ = cli(
                    ["review", "--state", str(state), "--config", str(enforced), str(review)]
                )
                assert verdict in (0, 1)
                if verdict == 1:
                    what = f"{w['kind']} {w['name']}"
                    denied.add((w["namespace"], what, resource, writer_label(user)))

        assert listed == denied
        assert code == (1 if denied else 0)


def writer_label(user: str) -> str:
    """How scan names who sends a request: the controller, a node, or any user."""
    if user.startswith(SA):
        return user.removeprefix(SA)
    return "any user" if user == ANYONE else user
