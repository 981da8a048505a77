"""Benchmark: one namespace's NetworkPolicy storm beside another namespace's Pod reviews (issue 23).

Run: `python tests/bench/bench_tenant_storm.py` (PYTHONPATH=<worktree>). The real aiohttp app
(plain HTTP on loopback, the decision log to /dev/null) holds a cluster given as manifests: in
namespace `team` a deny-all fence beside the costliest pool the default limits allow (two
all-pods policies filling `maxEntriesPerNamespace`, `bench_netpol.worst_namespace`); namespace
`other` fenced by a deny-all. A storm of N concurrent dry-run NetworkPolicy CREATEs in `team`
is sent — the same small all-pods policy each time ("same"), or each a different one
("distinct", defeating any memo; each pooled with the costly pool by `allow-all`) — while a client sends ordinary Pod CREATEs in `other` one after another.
Prints the storm's own time and the ordinary reviews' p50 / p99 / max, then the costliest single
review alone; asserts nothing. To see that review at the chart's CPU request, run the bench in a
cgroup limited to 100m (cgroup v1: `cpu.cfs_quota_us` 10000 of `cpu.cfs_period_us` 100000)
with `--storms 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from bench_netpol import policy, worst_namespace

from webhook import decisionlog
from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.netpol import analyse_policy
from webhook.server import Runtime, build_app

NETPOL = {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"}
NETPOL_KIND = {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"}
POD = {"group": "", "version": "v1", "resource": "pods"}
POD_KIND = {"group": "", "version": "v1", "kind": "Pod"}


def review(uid: str, namespace: str, gvr: dict[str, str], kind: dict[str, str], obj: Any) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": kind,
                "resource": gvr,
                "requestKind": kind,
                "requestResource": gvr,
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "tenant", "groups": ["system:authenticated"]},
                "object": obj,
                "dryRun": gvr is NETPOL,
            },
        }
    )


def storm_body(i: int, distinct: bool) -> bytes:
    """An all-pods policy opening one port to one /16: `allow-all` pools it with the namespace's
    (the costly pool) — the same each time, or each on its own port and network."""
    n = i if distinct else 0
    rule = {"from": [{"ipBlock": {"cidr": f"10.{n % 256}.0.0/16"}}], "ports": [{"port": 1000 + n}]}
    spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [rule]}
    return review(f"storm-{i}", "team", NETPOL, NETPOL_KIND, policy(f"open-{n}", spec))


def pod_body(i: int) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"web-{i}", "namespace": "other"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }
    return review(f"pod-{i}", "other", POD, POD_KIND, pod)


async def run(url: str, storm: int, distinct: bool) -> None:
    latencies: list[float] = []
    done = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=storm + 4)) as session:

        async def post(body: bytes) -> dict[str, Any]:
            async with session.post(url, data=body) as answer:
                return dict((await answer.json())["response"])

        async def ordinary() -> None:
            i = 0
            while not done.is_set() or i < 20:
                started = time.perf_counter()
                await post(pod_body(i))
                latencies.append(time.perf_counter() - started)
                i += 1
                await asyncio.sleep(0.005)

        await post(pod_body(-1))  # warm the connection pool and the code
        beside = asyncio.create_task(ordinary())
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        answers = await asyncio.gather(*(post(storm_body(i, distinct)) for i in range(storm)))
        storm_s = time.perf_counter() - started
        done.set()
        await beside
    allowed = sum(1 for a in answers if a["allowed"])
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  {storm:>3} {'distinct' if distinct else 'same':<8} storm {storm_s * 1000:7.0f} ms "
        f"({allowed}/{storm} allowed) | Pod review beside it (n={len(ordered)}): "
        f"p50 {statistics.median(ordered) * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms, "
        f"max {ordered[-1] * 1000:6.1f} ms"
    )


async def worst_review(url: str) -> None:
    """One NetworkPolicy UPDATE in namespace team alone: one of the two policies that fill the
    namespace's entry limit, its ports shifted by one (a new pool: nothing remembered helps)."""
    old = worst_namespace()[0]
    new = {**old, "spec": dict(old["spec"])}
    rule = dict(new["spec"]["ingress"][0])
    rule["ports"] = [{"port": 2, "endPort": 65534}]
    new["spec"]["ingress"] = [rule]
    body = orjson.loads(review("worst", "team", NETPOL, NETPOL_KIND, new))
    body["request"].update(operation="UPDATE", oldObject=old, name=old["metadata"]["name"])
    body["request"]["dryRun"] = False
    async with aiohttp.ClientSession() as session:
        cpu = time.process_time()
        started = time.perf_counter()
        async with session.post(url, data=orjson.dumps(body)) as answer:
            allowed = (await answer.json())["response"]["allowed"]
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    print(
        f"  the costliest single review (UPDATE of a policy filling half the namespace's "
        f"entries, {len(orjson.dumps(body)) >> 10} KiB): {wall * 1000:.0f} ms, "
        f"{cpu * 1000:.0f} ms of CPU ({'allowed' if allowed else 'denied'})"
    )


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storms", default="30,100", help="storm sizes; 0 for none")
    args = parser.parse_args()
    decisionlog.configure(Path("/dev/null").open("wb"))  # noqa: SIM115 - for the process
    fence = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    team = [analyse_policy(policy("default-deny", fence)), *map(analyse_policy, worst_namespace())]
    other = [analyse_policy(policy("default-deny", fence, namespace="other"))]
    cluster = StaticView(
        [
            namespace_facts("team", team, running_pods=3),
            namespace_facts("other", other, running_pods=3),
        ]
    )
    settings = parse_settings("", "bench.yaml", Path())
    runner = web.AppRunner(build_app(Runtime(settings=settings, cluster=cluster)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/validate"
    print(
        "namespace team: a fence and the costliest pool the default limits allow; "
        "dry-run NetworkPolicy CREATEs there, Pod CREATEs in namespace other beside them"
    )
    for storm in (int(n) for n in args.storms.split(",")):
        for distinct in (False, True) if storm else ():
            await run(url, storm, distinct)
    await worst_review(url)  # last: its approval is remembered, and counts in every pool after
    await runner.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
