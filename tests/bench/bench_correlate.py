"""`kubefence correlate` throughput and memory on a generated multi-GB audit log.

Run as `python tests/bench/bench_correlate.py [--gigabytes 2]`; prints numbers, asserts nothing
about time. Two child processes generate the audit log and the matching decision log on the fly
and write them into pipes (nothing is stored); this process correlates them and reports audit
events per CPU-second of the correlating process, wall-clock rate and peak RSS.

The stream looks like a busy cluster's Metadata-level log: 1-2 KB events, most of them reads,
lease renewals, kubelet status patches and Event writes that kubefence never decides; a few
percent are workload and NetworkPolicy writes that carry the webhook's annotations (with their
decision lines), exec sessions, conflict retries, and now and then a fail-open bypass.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from webhook.correlate.correlation import Correlation
from webhook.correlate.model import CorrelateOptions

WEBHOOK = "validate.kubefence.io"
BLOCK_EVENTS = 2000  # one block is one second of cluster time
SECOND = "TTTTTTTTTTTTTTTTTTT"  # replaced by the block's "YYYY-MM-DDTHH:MM:SS"
BLOCK = "BBBBBBBB"  # replaced by the block number, in every id of the block
START = 1_767_225_600  # 2026-01-01T00:00:00Z

_NODES = [f"node-{i:03d}" for i in range(40)]
_NAMESPACES = [f"team-{i:02d}" for i in range(30)]
_CONTROLLERS = [
    "replicaset-controller",
    "deployment-controller",
    "job-controller",
    "endpoint-controller",
]


def _user(kind: str, rng: random.Random) -> dict[str, object]:
    if kind == "node":
        node = rng.choice(_NODES)
        return {
            "username": f"system:node:{node}",
            "groups": ["system:nodes", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": [f"X509SHA256={'f' * 64}"]},
        }
    if kind == "controller":
        sa = rng.choice(_CONTROLLERS)
        return {
            "username": f"system:serviceaccount:kube-system:{sa}",
            "uid": "0b3f2a9c-5d6e-4f70-8a91-b2c3d4e5f607",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
            "extra": {
                "authentication.kubernetes.io/credential-id": [
                    "JTI=6c1f0d0e-9a8b-4c7d-8e6f-5a4b3c2d1e0f"
                ]
            },
        }
    name = rng.choice(["alice@example.com", "bob@example.com", "ci-deployer"])
    return {
        "username": name,
        "groups": ["developers", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/credential-id": ["JTI=aa11bb22-cc33-dd44"]},
    }


def _agent(kind: str) -> str:
    if kind == "node":
        return "kubelet/v1.37.2 (linux/amd64) kubernetes/8f4c3a1"
    if kind == "controller":
        return (
            "kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/8f4c3a1/"
            "system:serviceaccount:kube-system:replicaset-controller"
        )
    return "kubectl/v1.37.2 (linux/amd64) kubernetes/8f4c3a1"


def _event(
    i: int,
    rng: random.Random,
    *,
    verb: str,
    user_kind: str,
    resource: str,
    namespace: str,
    name: str,
    group: str = "",
    sub: str = "",
    code: int = 200,
    stage: str = "ResponseComplete",
    annotations: dict[str, str] | None = None,
) -> dict[str, object]:
    fraction = i * 450
    version = "v1"
    prefix = f"/apis/{group}/{version}" if group else "/api/v1"
    uri = f"{prefix}/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "")
    if sub:
        uri += f"/{sub}"
    ref: dict[str, object] = {"resource": resource, "namespace": namespace}
    if name:
        ref["name"] = name
    if group:
        ref["apiGroup"] = group
    ref["apiVersion"] = version
    if sub:
        ref["subresource"] = sub
    event: dict[str, object] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"{BLOCK}-{i:04x}-4e2d-9c1b-{rng.getrandbits(48):012x}",
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": _user(user_kind, rng),
        "sourceIPs": [f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"],
        "userAgent": _agent(user_kind),
        "objectRef": ref,
    }
    if stage != "RequestReceived":
        event["responseStatus"] = {"metadata": {}, "code": code}
    event["requestReceivedTimestamp"] = f"{SECOND}.{max(fraction - 900, 0):06d}Z"
    event["stageTimestamp"] = f"{SECOND}.{fraction:06d}Z"
    notes = {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": (
            'RBAC: allowed by ClusterRoleBinding "system:controller:replicaset-controller" of '
            'ClusterRole "system:controller:replicaset-controller" to ServiceAccount '
            '"replicaset-controller/kube-system"'
        ),
    }
    notes.update(annotations or {})
    event["annotations"] = notes
    return event


def _decision(i: int, decision_id: str, deny: bool = False, **fields: object) -> dict[str, object]:
    verdict = "deny" if deny else "allow"
    rules = [
        {
            "id": "default-deny",
            "result": "fail" if deny else "pass",
            "mode": "enforce",
            "message": "not fenced" if deny else "fenced",
        },
        {"id": "host-network", "result": "pass", "mode": "enforce", "message": "no hostNetwork"},
    ]
    return {
        "decision_id": decision_id,
        "decision": verdict,
        "allowed": not deny,
        "mode": "",
        "rules": rules,
        "operation": fields["operation"],
        "dry_run": False,
        "kind": fields["kind"],
        "resource": fields["resource"],
        "subresource": fields.get("subresource", ""),
        "namespace": fields["namespace"],
        "name": fields["name"],
        "user": fields["user"],
        "groups": ["system:authenticated"],
        "audit_annotations": {
            "decision": verdict,
            "rules": "default-deny" if deny else "",
            "decision-id": decision_id,
        },
        "policy_revision": "6e340b9cffb3",
        "cache_synced": True,
        "latency_ms": 0.31,
        "event": "admission.decision",
        "level": "info",
        "timestamp": f"{SECOND}.{max(i * 450 - 300, 0):06d}Z",
    }


def make_block(seed: int = 7) -> tuple[bytes, bytes, dict[str, int]]:
    """One second of cluster traffic: audit lines, decision lines, and what it contains."""
    rng = random.Random(seed)
    audit: list[bytes] = []
    decisions: list[bytes] = []
    counts = {"joined": 0, "bypasses": 0, "sensitive": 0, "retried": 0}
    for i in range(BLOCK_EVENTS):
        ns = rng.choice(_NAMESPACES)
        roll = 1.0 if i >= BLOCK_EVENTS - 2 else rng.random()
        if roll < 0.30:
            e = _event(
                i,
                rng,
                verb="get",
                user_kind="node",
                resource="configmaps",
                namespace=ns,
                name=f"cfg-{rng.randrange(500)}",
            )
        elif roll < 0.50:
            e = _event(
                i,
                rng,
                verb="update",
                user_kind="node",
                resource="leases",
                group="coordination.k8s.io",
                namespace="kube-node-lease",
                name=rng.choice(_NODES),
            )
        elif roll < 0.62:
            e = _event(
                i,
                rng,
                verb="patch",
                user_kind="node",
                resource="pods",
                sub="status",
                namespace=ns,
                name=f"web-{rng.randrange(10**6):06d}",
            )
        elif roll < 0.72:
            e = _event(
                i,
                rng,
                verb="create",
                user_kind="node",
                resource="events",
                namespace=ns,
                name="",
                code=201,
            )
        elif roll < 0.84:
            e = _event(
                i, rng, verb="list", user_kind="controller", resource="pods", namespace=ns, name=""
            )
        elif roll < 0.90:
            e = _event(
                i,
                rng,
                verb="watch",
                user_kind="controller",
                resource="endpointslices",
                group="discovery.k8s.io",
                namespace=ns,
                name="",
                stage="ResponseStarted",
            )
        elif roll < 0.95:
            e = _event(
                i,
                rng,
                verb="get",
                user_kind="person",
                resource="pods",
                namespace=ns,
                name=f"web-{rng.randrange(10**6):06d}",
            )
        else:
            # The few percent kubefence decides: pods by controllers, deployments by people,
            # NetworkPolicy edits, exec sessions; now and then a retry or a fail-open bypass.
            kind = 0.6 if i == BLOCK_EVENTS - 2 else rng.random()
            did = f"{BLOCK}-d{i:03x}-4b5c-8d9e-{rng.getrandbits(48):012x}"
            user_kind, verb, res, grp, sub, code, gvk, op = (
                ("controller", "create", "pods", "", "", 201, "/v1/Pod", "CREATE")
                if kind < 0.5
                else (
                    "person",
                    "patch",
                    "deployments",
                    "apps",
                    "",
                    200,
                    "apps/v1/Deployment",
                    "UPDATE",
                )
                if kind < 0.8
                else (
                    "person",
                    "update",
                    "networkpolicies",
                    "networking.k8s.io",
                    "",
                    200,
                    "networking.k8s.io/v1/NetworkPolicy",
                    "UPDATE",
                )
                if kind < 0.9
                else ("person", "create", "pods", "", "exec", 101, "/v1/PodExecOptions", "CONNECT")
            )
            name = f"web-{rng.randrange(10**6):06d}"
            if i == BLOCK_EVENTS - 1:  # one fail-open bypass a second
                e = _event(
                    i,
                    rng,
                    verb=verb,
                    user_kind=user_kind,
                    resource=res,
                    group=grp,
                    sub=sub,
                    namespace=ns,
                    name=name,
                    code=code,
                    annotations={
                        "failed-open.validating.webhook.admission.k8s.io/round_0_index_0": WEBHOOK
                    },
                )
                counts["bypasses"] += 1
            else:
                deny = i == BLOCK_EVENTS - 2  # one denial a second, by the same person
                e = _event(
                    i,
                    rng,
                    verb=verb,
                    user_kind=user_kind,
                    resource=res,
                    group=grp,
                    sub=sub,
                    namespace=ns,
                    name=name,
                    code=403 if deny else code,
                    annotations={
                        f"{WEBHOOK}/decision": "deny" if deny else "allow",
                        f"{WEBHOOK}/decision-id": did,
                        f"{WEBHOOK}/policy-revision": "6e340b9cffb3",
                        f"{WEBHOOK}/rules": "default-deny" if deny else "",
                    },
                )
                user = e["user"]
                assert isinstance(user, dict)
                fields = {
                    "operation": op,
                    "kind": gvk,
                    "resource": f"{grp}/{res}" if grp else res,
                    "subresource": sub,
                    "namespace": ns,
                    "name": name,
                    "user": user["username"],
                }
                decisions.append(orjson.dumps(_decision(i, did, deny, **fields)) + b"\n")
                counts["joined"] += 1
                counts["sensitive"] += sub == "exec"
                if op == "UPDATE" and rng.random() < 0.1:
                    retry_id = f"{BLOCK}-r{i:03x}-4b5c-8d9e-{rng.getrandbits(48):012x}"
                    decisions.append(orjson.dumps(_decision(i, retry_id, **fields)) + b"\n")
                    counts["retried"] += 1
        audit.append(orjson.dumps(e) + b"\n")
    return b"".join(audit), b"".join(decisions), counts


def emit(which: str, blocks: int) -> None:
    """Write `blocks` seconds of the audit log or the decision log to stdout."""
    audit, decisions, _ = make_block()
    template = audit if which == "audit" else decisions
    out = sys.stdout.buffer
    for n in range(blocks):
        second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START + n)).encode()
        out.write(template.replace(BLOCK.encode(), b"%08x" % n).replace(SECOND.encode(), second))
    out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gigabytes", type=float, default=2.0, help="audit log size (default 2)")
    parser.add_argument("--emit", choices=("audit", "decisions"), help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emit:
        emit(args.emit, args.blocks)
        return
    audit, decisions, counts = make_block()
    blocks = max(1, int(args.gigabytes * 1e9 / len(audit)))
    lines = audit.count(b"\n")
    decision_lines = decisions.count(b"\n")
    print(
        f"stream: {blocks} blocks of {lines} audit events ({len(audit) / lines:.0f} B/event "
        f"average) and {decision_lines} decision lines; "
        f"{blocks * len(audit) / 1e9:.2f} GB of audit log, generated into a pipe"
    )
    me = [sys.executable, str(Path(__file__).resolve())]
    procs = [
        subprocess.Popen(
            [*me, "--emit", which, "--blocks", str(blocks)], stdout=subprocess.PIPE, bufsize=1 << 20
        )
        for which in ("audit", "decisions")
    ]
    assert procs[0].stdout is not None
    assert procs[1].stdout is not None
    options = CorrelateOptions(
        webhook_names=(WEBHOOK,), exempt_namespaces=frozenset({"kube-system"})
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    report = Correlation(
        [("audit", procs[0].stdout)], [("decisions", procs[1].stdout)], options
    ).run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    for p in procs:
        p.wait()
    s = report.summary
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"correlated {s.audit_events:,} audit events and {s.decisions:,} decisions in "
        f"{wall:.1f}s wall, {cpu:.1f}s CPU"
    )
    print(f"  {s.audit_events / cpu:,.0f} audit events/s per core (CPU time of the correlator)")
    print(
        f"  {s.audit_events / wall:,.0f} audit events/s wall clock, {blocks * len(audit) / wall / 1e6:,.0f} MB/s"
    )
    print(f"  peak RSS {peak_mb:,.0f} MB")
    print(
        f"  joined {s.joined:,} (expected {counts['joined'] * blocks:,}), retried {s.retried:,} "
        f"(expected {counts['retried'] * blocks:,}), bypasses {s.bypasses:,} (expected "
        f"{counts['bypasses'] * blocks:,}), sensitive access {s.sensitive_access:,}, audit gaps "
        f"{s.audit_gaps:,}, denials {s.denials:,}, probers {s.probers}, malformed "
        f"{s.malformed_lines:,}"
    )


if __name__ == "__main__":
    main()
