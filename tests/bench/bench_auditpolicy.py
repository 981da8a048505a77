"""Audit Policy evaluation speed: evaluations/second for a kube-up style policy and a 3,000-rule one.

Run as `python tests/bench/bench_auditpolicy.py`; prints numbers, asserts nothing about time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import yaml

from webhook.auditpolicy import Policy, RequestAttributes, load_policy, parse_policy

KNOWN_APIS = [
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "metrics.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
]
KNOWN = "\n".join(f'      - group: "{group}"' for group in KNOWN_APIS)

# The shape of kube-up's / GKE's default audit policy (cluster/gce/gci/configure-helper.sh).
KUBE_UP_POLICY = f"""
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
      - group: ""
        resources: ["endpoints", "services", "services/status"]
  - level: None
    users: ["system:unsecured"]
    namespaces: ["kube-system"]
    verbs: ["get"]
    resources:
      - group: ""
        resources: ["configmaps"]
  - level: None
    users: ["kubelet"]
    verbs: ["get"]
    resources:
      - group: ""
        resources: ["nodes", "nodes/status"]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get"]
    resources:
      - group: ""
        resources: ["nodes", "nodes/status"]
  - level: None
    users: [system:kube-controller-manager, system:cloud-controller-manager,
            system:kube-scheduler, "system:serviceaccount:kube-system:endpoint-controller"]
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources:
      - group: ""
        resources: ["endpoints"]
  - level: None
    users: ["system:apiserver"]
    verbs: ["get"]
    resources:
      - group: ""
        resources: ["namespaces", "namespaces/status", "namespaces/finalize"]
  - level: None
    users: ["cluster-autoscaler"]
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources:
      - group: ""
        resources: ["configmaps", "endpoints"]
  - level: None
    users: [system:kube-controller-manager, system:cloud-controller-manager]
    verbs: ["get", "list"]
    resources:
      - group: "metrics.k8s.io"
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get", "update"]
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
  - level: None
    users: [system:kube-controller-manager, system:kube-scheduler]
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version", "/swagger*", "/openapi*"]
  - level: None
    resources:
      - group: ""
        resources: ["events"]
      - group: events.k8s.io
        resources: ["events"]
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
    verbs: ["watch"]
  - level: Metadata
    nonResourceURLs: ["/metrics", "/logs*", "/debug*"]
  - level: Request
    users: [kubelet, system:node-problem-detector,
            "system:serviceaccount:kube-system:node-problem-detector"]
    verbs: ["update", "patch"]
    resources:
      - group: ""
        resources: ["nodes/status", "pods/status"]
    omitStages: ["RequestReceived"]
  - level: Request
    userGroups: ["system:nodes"]
    verbs: ["update", "patch"]
    resources:
      - group: ""
        resources: ["nodes/status", "pods/status"]
    omitStages: ["RequestReceived"]
  - level: Request
    users: ["system:serviceaccount:kube-system:namespace-controller"]
    verbs: ["deletecollection"]
    omitStages: ["RequestReceived"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["pods/exec", "pods/attach", "pods/portforward"]
  - level: RequestResponse
    resources:
      - group: rbac.authorization.k8s.io
        resources: ["clusterroles", "clusterrolebindings", "roles", "rolebindings"]
    verbs: ["create", "update", "patch", "delete"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps", "serviceaccounts/token"]
      - group: authentication.k8s.io
        resources: ["tokenreviews"]
    omitStages: ["RequestReceived"]
  - level: Metadata
    resources:
      - group: authorization.k8s.io
        resources: ["subjectaccessreviews", "selfsubjectaccessreviews"]
    omitStages: ["RequestReceived"]
  - level: Metadata
    resources:
      - group: certificates.k8s.io
        resources: ["certificatesigningrequests/approval"]
  - level: Metadata
    namespaces: ["kube-public"]
  - level: None
    users: ["system:serviceaccount:kube-system:generic-garbage-collector"]
    verbs: ["list", "watch"]
  - level: Request
    resources:
      - group: ""
        resources: ["pods/log", "pods/status"]
    verbs: ["get"]
  - level: Request
    verbs: ["get", "list", "watch"]
    resources:
{KNOWN}
    omitStages: ["RequestReceived"]
  - level: RequestResponse
    resources:
{KNOWN}
    omitStages: ["RequestReceived"]
  - level: Metadata
    omitStages: ["RequestReceived"]
"""

VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
RESOURCES = [
    ("", "pods", ""),
    ("", "pods", "status"),
    ("", "pods", "log"),
    ("", "pods", "exec"),
    ("", "configmaps", ""),
    ("", "secrets", ""),
    ("", "nodes", "status"),
    ("", "endpoints", ""),
    ("", "events", ""),
    ("apps", "deployments", ""),
    ("apps", "deployments", "scale"),
    ("batch", "jobs", ""),
    ("coordination.k8s.io", "leases", ""),
    ("example.com", "widgets", ""),
    ("rbac.authorization.k8s.io", "rolebindings", ""),
    ("networking.k8s.io", "networkpolicies", ""),
]
USERS = [
    ("system:kube-proxy", ("system:authenticated",)),
    ("system:node:n1", ("system:nodes", "system:authenticated")),
    ("system:kube-controller-manager", ("system:authenticated",)),
    ("system:serviceaccount:team-7:app", ("system:serviceaccounts", "system:authenticated")),
    ("alice@example.com", ("developers", "system:authenticated")),
    (None, ()),
]
PATHS = ["/healthz", "/readyz", "/metrics", "/version", "/apis", "/openapi/v3", "/logs/kube.log"]


def generated_policy(size: int, teams: int = 400) -> Policy:
    """A large policy: per-team rules by namespace, users, resource names; one catch-all at the end."""
    rules: list[dict[str, object]] = []
    for i in range(size - 1):
        team, kind = f"team-{i % teams}", i % 6
        group, resource, _ = RESOURCES[i % len(RESOURCES)]
        if kind == 0:
            rule: dict[str, object] = {"level": "None", "namespaces": [team], "verbs": ["watch"]}
        elif kind == 1:
            gr = {"group": group, "resources": [resource, f"{resource}/*"]}
            rule = {"level": "Request", "namespaces": [team], "resources": [gr]}
        elif kind == 2:
            rule = {"level": "Metadata", "users": [f"system:serviceaccount:{team}:ci-{i}"]}
        elif kind == 3:
            gr = {"group": group, "resources": [resource], "resourceNames": [f"obj-{i}"]}
            rule = {"level": "RequestResponse", "resources": [gr]}
        elif kind == 4:
            rule = {"level": "None", "nonResourceURLs": [f"/custom/{i}*"]}
        else:
            gr = {"group": "*", "resources": [f"*/sub{i}"]}
            rule = {"level": "Request", "userGroups": [f"group-{i}"], "resources": [gr]}
        rules.append(rule)
    rules.append({"level": "Metadata", "omitStages": ["RequestReceived"]})
    doc = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": rules}
    return parse_policy(yaml.safe_load(yaml.safe_dump(doc)), "generated")


def request_mix(count: int, namespaces: int, seed: int = 7) -> list[RequestAttributes]:
    rng = random.Random(seed)
    mix = []
    for _ in range(count):
        user, groups = rng.choice(USERS)
        if rng.random() < 0.1:
            mix.append(RequestAttributes(user, groups, "get", False, path=rng.choice(PATHS)))
            continue
        group, resource, sub = rng.choice(RESOURCES)
        namespace = "" if resource == "nodes" else f"team-{rng.randrange(namespaces)}"
        name = "" if rng.random() < 0.3 else f"obj-{rng.randrange(3000)}"
        mix.append(
            RequestAttributes(
                user, groups, rng.choice(VERBS), True, group, "v1", resource, sub, namespace, name
            )
        )
    return mix


def rate(
    evaluate: Callable[[RequestAttributes], object], mix: Sequence[RequestAttributes]
) -> float:
    for attrs in mix[:1000]:  # warm up
        evaluate(attrs)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for attrs in mix:
            evaluate(attrs)
        best = max(best, len(mix) / (time.perf_counter() - start))
    return best


def main() -> None:
    kube_up = load_policy(KUBE_UP_POLICY, "kube-up")
    start = time.perf_counter()
    big = generated_policy(3000)
    build = time.perf_counter() - start
    common = request_mix(100_000, namespaces=50)
    spread = request_mix(100_000, namespaces=20_000, seed=8)  # defeats the candidate cache
    print(f"{'policy':<28} {'requests':<34} {'evaluations/s':>14}")
    for label, policy in (
        (f"kube-up ({len(kube_up)} rules)", kube_up),
        (f"generated ({len(big)} rules)", big),
    ):
        for mix_label, mix in (
            ("100k mixed, 50 namespaces", common),
            ("100k mixed, 20k namespaces", spread),
        ):
            print(f"{label:<28} {mix_label:<34} {rate(policy.evaluate, mix):>14,.0f}")
    print(f"generated policy: parsed, validated and indexed in {build * 1000:.0f} ms")


if __name__ == "__main__":
    main()
