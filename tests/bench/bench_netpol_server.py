"""Benchmark: what a hostile NetworkPolicy review costs the server's event loop (issue 16).

Run: `python tests/bench/bench_netpol_server.py`. The real aiohttp app (plain HTTP on loopback,
the decision log to /dev/null) gets a CREATE of each hostile policy (20,000 excepts; 8,000 rules x
5 ipBlocks) and, sent beside it, an ordinary Deployment CREATE; a ticker measures how long the
loop was held. Prints numbers, asserts nothing about time.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from bench_netpol import hostile_excepts, hostile_rules, realistic

from webhook import decisionlog
from webhook.cluster.view import StaticView, namespace_facts
from webhook.commands.demo import sample_review
from webhook.config import parse_settings
from webhook.netpol import analyse_policy
from webhook.server import Runtime, build_app


def policy_create(obj: dict[str, Any]) -> bytes:
    gvr = {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"}
    kind = {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"}
    obj["metadata"]["namespace"] = "team"
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "hostile",
            "kind": kind,
            "resource": gvr,
            "requestKind": kind,
            "requestResource": gvr,
            "namespace": "team",
            "operation": "CREATE",
            "userInfo": {"username": "mallory"},
            "object": obj,
            "dryRun": True,
        },
    }
    return orjson.dumps(review)


async def measure(label: str, body: bytes, url: str, session: aiohttp.ClientSession) -> None:
    ordinary = orjson.dumps(sample_review("ordinary", "team", "web"))
    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - before - 0.001)

    async def post(data: bytes) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        async with session.post(url, data=data) as answer:
            payload = await answer.json()
        return time.perf_counter() - started, payload["response"]

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    (hostile_s, hostile), (ordinary_s, _) = await asyncio.gather(post(body), post(ordinary))
    stop.set()
    await tick
    verdict = "allowed" if hostile["allowed"] else "denied"
    reason = (hostile.get("status") or {}).get("message", "")[:90]
    print(
        f"  {label:<34} {len(body) / 1024:>7.0f} KiB  answered in {hostile_s * 1000:7.1f} ms"
        f" ({verdict}: {reason})\n  {'':34} ordinary review beside it: {ordinary_s * 1000:.1f} ms;"
        f" longest loop stall {lag * 1000:.1f} ms"
    )


async def main() -> int:
    decisionlog.configure(Path("/dev/null").open("wb"))  # noqa: SIM115 - for the process
    facts = namespace_facts(
        "team", [analyse_policy({"metadata": {"name": "deny", "namespace": "team"}, "spec": {}})]
    )
    settings = parse_settings("server: {maxBodyBytes: 7340032}", "bench.yaml", Path())
    runtime = Runtime(settings=settings, cluster=StaticView([facts]))
    runner = web.AppRunner(build_app(runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/validate"
    print("one server process; each hostile CREATE sent with an ordinary review beside it")
    async with aiohttp.ClientSession() as session:
        await measure("warm-up (30-rule policy)", policy_create(realistic()), url, session)
        await measure("20,000 excepts", policy_create(hostile_excepts()), url, session)
        await measure("8,000 rules x 5 ipBlocks", policy_create(hostile_rules()), url, session)
        await measure("realistic 30-rule policy", policy_create(realistic()), url, session)
    await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(asyncio.run(main()))
