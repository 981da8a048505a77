"""Benchmark: forged reviews that each ask for a live read, beside a real one (issue 23).

Run: `python tests/bench/bench_live_reads.py` (PYTHONPATH=<worktree>). The real aiohttp app
(plain HTTP on loopback, the decision log to /dev/null) decides on a cluster given as manifests
and confirms through the real `NamespaceReader`, over a stand-in API server that answers every
GET after `--latency` (default 20 ms) and counts reads and reads in flight. A forger on
127.0.0.2 sends, at once, (a) 300 DELETEs of namespace `team`'s only fence (each needs a read
made after it arrived) and (b) 500 Pod CREATEs across 500 unfenced namespaces (each denial is
re-checked live); the API server's own address, 127.0.0.1, sends one real DELETE of a newer
fence in namespace `billing` beside each storm. Prints reads, most in flight, the storm's time
and the real review's latency; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from bench_netpol import policy

from webhook import decisionlog
from webhook.cluster.live import ConfirmedView, NamespaceReader
from webhook.cluster.view import ClusterView, StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.netpol import analyse_policy
from webhook.server import Runtime, build_app

FENCE = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


class SlowApi:
    """Answers a namespace's GETs as the cluster below has it, after `latency` seconds."""

    def __init__(self, latency: float, fences: dict[str, list[dict[str, Any]]]) -> None:
        self.latency = latency
        self.fences = fences
        self.reads = 0
        self.in_flight = 0
        self.most = 0

    async def get(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        timeout: float | None = None,
        accept: str = "",
    ) -> dict[str, Any]:
        namespace = path.split("/namespaces/")[1].split("/", maxsplit=1)[0]
        first = path.endswith(f"/namespaces/{namespace}")
        if first:
            self.reads += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            if first:
                self.in_flight -= 1
        if first:
            return {"metadata": {"name": namespace}, "status": {"phase": "Active"}}
        if path.endswith("/networkpolicies"):
            return {"metadata": {}, "items": self.fences.get(namespace, [])}
        return {"metadata": {}, "items": [{"metadata": {"name": "running"}}]}  # a running Pod

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class Confirmer:
    def __init__(self, base: ClusterView, reader: NamespaceReader) -> None:
        self.base = base
        self.reader = reader
        self.by_caller = "caller" in inspect.signature(reader.read).parameters

    async def confirm(
        self, namespace: str, timeout: float, *, not_before: float | None = None, caller: str = ""
    ) -> ClusterView | None:
        extra = {"caller": caller} if self.by_caller else {}
        try:
            facts = await self.reader.read(namespace, timeout, not_before=not_before, **extra)
        except Exception:
            return None
        return ConfirmedView(self.base, facts)


def review(uid: str, namespace: str, operation: str, obj: Any, old: Any, *, gvr: Any) -> bytes:
    group, resource, kind = gvr
    g = {"group": group, "version": "v1", "resource": resource}
    k = {"group": group, "version": "v1", "kind": kind}
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": k,
                "resource": g,
                "requestKind": k,
                "requestResource": g,
                "namespace": namespace,
                "name": (old or obj)["metadata"]["name"],
                "operation": operation,
                "userInfo": {"username": "someone", "groups": ["system:authenticated"]},
                "object": obj,
                "oldObject": old,
                "dryRun": False,
            },
        }
    )


NETPOL = ("networking.k8s.io", "networkpolicies", "NetworkPolicy")
POD = ("", "pods", "Pod")


def pod(namespace: str) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": namespace}, "spec": {"containers": [{}]}}


async def storm(url: str, bodies: list[bytes], real: bytes, label: str, api: SlowApi) -> None:
    api.reads = api.most = 0
    forger = aiohttp.TCPConnector(limit=0, local_addr=("127.0.0.2", 0))
    server = aiohttp.TCPConnector(local_addr=("127.0.0.1", 0))
    async with (
        aiohttp.ClientSession(connector=forger) as forged,
        aiohttp.ClientSession(connector=server) as honest,
    ):

        async def post(session: aiohttp.ClientSession, body: bytes) -> dict[str, Any]:
            async with session.post(url + "?timeout=10s", data=body) as answer:
                return dict((await answer.json())["response"])

        started = time.perf_counter()
        flood = asyncio.gather(*(post(forged, b) for b in bodies))
        await asyncio.sleep(0.05)
        real_started = time.perf_counter()
        answer = await post(honest, real)
        real_s = time.perf_counter() - real_started
        answers = await flood
        storm_s = time.perf_counter() - started
    denied = sum(1 for a in answers if not a["allowed"])
    print(
        f"  {label:<44} reads {api.reads:>4}, most in flight {api.most:>3}, storm "
        f"{storm_s * 1000:6.0f} ms ({denied}/{len(bodies)} denied) | real review beside it: "
        f"{real_s * 1000:6.1f} ms, {'allowed' if answer['allowed'] else 'denied'}"
    )


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.02)
    args = parser.parse_args()
    decisionlog.configure(Path("/dev/null").open("wb"))  # noqa: SIM115 - for the process
    team_fence = policy("default-deny", FENCE)
    billing = [
        policy("default-deny", FENCE, namespace="billing"),
        policy("newer-deny", FENCE, namespace="billing"),
    ]
    billing[0]["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    billing[1]["metadata"]["creationTimestamp"] = "2026-02-01T00:00:00Z"
    facts = [
        namespace_facts("team", [analyse_policy(team_fence)], running_pods=3),
        namespace_facts("billing", [analyse_policy(p) for p in billing], running_pods=3),
        *(namespace_facts(f"open-{i}", running_pods=3) for i in range(500)),
    ]
    base = StaticView(facts)
    api = SlowApi(args.latency, {"team": [team_fence], "billing": billing})
    runtime = Runtime(
        settings=parse_settings("", "bench.yaml", Path()),
        cluster=base,
        confirmer=Confirmer(base, NamespaceReader(api)),
    )
    runner = web.AppRunner(build_app(runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/validate"
    real = review("real", "billing", "DELETE", None, billing[1], gvr=NETPOL)
    print(f"stand-in API server answering each GET after {args.latency * 1000:.0f} ms")
    deletes = [review(f"f{i}", "team", "DELETE", None, team_fence, gvr=NETPOL) for i in range(300)]
    await storm(url, deletes, real, "300 forged fence DELETEs, one namespace", api)
    pods = [
        review(f"p{i}", f"open-{i}", "CREATE", pod(f"open-{i}"), None, gvr=POD) for i in range(500)
    ]
    await storm(url, pods, real, "500 forged Pod CREATEs, 500 namespaces", api)
    await runner.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
