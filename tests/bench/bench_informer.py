"""The informer at scale: cold sync, memory and decision latency with 10,000 namespaces and 50,000
NetworkPolicies in a real kube-apiserver.

Run as `python tests/bench/bench_informer.py` (starts a local control plane from
tests/e2e/controlplane.py, fills it, measures, stops it) or `--kubeconfig FILE` for a cluster that
is already filled (`--fill` fills it first). The measurement runs in a fresh child process, so the
RSS it reports is a webhook's: the imports, the client, the informer's state. Prints numbers,
asserts nothing about time (targets: cold sync <= 30 s, RSS <= 250 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "e2e")]

PREFIX = "bench"


# --- filling the cluster -------------------------------------------------------------------------


def policies_for(namespace: str, index: int) -> list[dict[str, Any]]:
    """Five NetworkPolicies of the shapes teams write; every tenth namespace is not fenced."""

    def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "bench"},
            },
            "spec": spec,
        }

    web = {"matchLabels": {"app": "web"}}
    first = (
        policy("debug-open", {"podSelector": {"matchLabels": {"app": "debug"}}, "ingress": [{}]})
        if index % 10 == 0
        else policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    )
    return [
        first,
        policy(
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                },
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            },
        ),
        policy(
            "web-ingress",
            {
                "podSelector": web,
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": f"t{index % 50}"}},
                                "podSelector": {"matchLabels": {"app": "frontend"}},
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": 8080}],
                    }
                ],
            },
        ),
        policy(
            "db",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {"from": [{"podSelector": web}], "ports": [{"protocol": "TCP", "port": 5432}]}
                ],
            },
        ),
        policy(
            "egress-internal",
            {
                "podSelector": web,
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                        "ports": [{"protocol": "TCP", "port": 443}],
                    }
                ],
            },
        ),
    ]


class Filler:
    """Creates objects with bounded concurrency over one keep-alive HTTP pool."""

    def __init__(self, server: str, token: str, ca: Path, concurrency: int) -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self.gate = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.created = 0
        self.existing = 0

    async def create(self, session: aiohttp.ClientSession, path: str, obj: dict[str, Any]) -> None:
        async with self.gate:
            for attempt in range(10):
                async with session.post(
                    self.server + path, data=orjson.dumps(obj), headers=self.headers, ssl=self.ssl
                ) as resp:
                    if resp.status == 201:
                        self.created += 1
                        return
                    if resp.status == 409:
                        self.existing += 1
                        return
                    if resp.status in (429, 500, 503, 504):
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    raise RuntimeError(f"POST {path}: {resp.status} {await resp.text()}")
            raise RuntimeError(f"POST {path}: gave up")

    async def fill(self, namespaces: int, per_namespace: int) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            names = [f"{PREFIX}-{i:05d}" for i in range(namespaces)]
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    self.create(
                        session,
                        "/api/v1/namespaces",
                        {
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {"name": n, "labels": {"team": f"t{i % 50}"}},
                        },
                    )
                    for i, n in enumerate(names)
                )
            )
            took = time.perf_counter() - started
            print(f"  namespaces: {namespaces} in {took:.1f}s ({namespaces / took:.0f}/s)")
            started = time.perf_counter()
            jobs = [
                self.create(
                    session, f"/apis/networking.k8s.io/v1/namespaces/{n}/networkpolicies", p
                )
                for i, n in enumerate(names)
                for p in policies_for(n, i)[:per_namespace]
            ]
            for chunk in range(0, len(jobs), 5000):
                await asyncio.gather(*jobs[chunk : chunk + 5000])
            took = time.perf_counter() - started
            print(f"  networkpolicies: {len(jobs)} in {took:.1f}s ({len(jobs) / took:.0f}/s)")


def credentials(kubeconfig: Path) -> tuple[str, str, Path]:
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster = doc["clusters"][0]["cluster"]
    return (
        cluster["server"],
        doc["users"][0]["user"]["token"],
        Path(cluster["certificate-authority"]),
    )


# --- measuring (in a fresh process) --------------------------------------------------------------


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    fields = dict(
        line.split(":", 1)
        for line in Path("/proc/self/status").read_text().splitlines()
        if ":" in line
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def latency_us(fn: Callable[[], object], rounds: int = 20000) -> dict[str, float]:
    for _ in range(500):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return {
        "p50": round(statistics.median(samples), 1),
        "p99": round(samples[int(len(samples) * 0.99)], 1),
        "mean": round(statistics.fmean(samples), 1),
    }


async def measure(kubeconfig: Path, namespaces: int) -> dict[str, Any]:
    before_import = rss_mb()[0]
    from objects import parse, workload_review

    from webhook.cluster.informer import Resource
    from webhook.cluster.live import build, connect
    from webhook.cluster.view import StaticView
    from webhook.decide import decide
    from webhook.server import Runtime
    from webhook.settings import DEFAULT_SETTINGS

    imported = rss_mb()[0]
    api, _ = await connect(kubeconfig)
    view = build(api)
    runtime = Runtime(settings=DEFAULT_SETTINGS, cluster=view)
    stall = 0.0

    async def ticker() -> None:  # the longest the loop could not answer a request during sync
        nonlocal stall
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, time.perf_counter() - t0 - 0.005)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    task = asyncio.create_task(view.informer.run(runtime))
    while not view.synced:
        await asyncio.sleep(0.01)
    sync_seconds = time.perf_counter() - started
    tick.cancel()
    sync_stall = stall
    gc.collect()
    rss, peak = rss_mb()
    policies = sum(
        len(f.policies) for n in range(namespaces) if (f := view.namespace(f"{PREFIX}-{n:05d}"))
    )

    # A re-list while serving (what a 410 Gone costs): nothing changed, so facts are kept.
    stall = 0.0
    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    for resource in Resource:
        await view.informer._list(resource, runtime)
    relist_seconds = time.perf_counter() - started
    tick.cancel()
    relist_stall = stall

    fenced_ns, open_ns = f"{PREFIX}-00001", f"{PREFIX}-00010"
    allow = parse(workload_review("Pod", namespace=fenced_ns))
    deny = parse(workload_review("Pod", namespace=open_ns))
    small = StaticView([f for f in (view.namespace(fenced_ns), view.namespace(open_ns)) if f])
    empty = StaticView([])
    result = {
        "namespaces": len(view.informer.state),
        "policies_in_bench_namespaces": policies,
        "cold_sync_seconds": round(sync_seconds, 2),
        "lists": {r.value: view.informer.streams[r].lists for r in Resource},
        "max_loop_stall_ms": round(sync_stall * 1000, 1),
        "relist_both_seconds": round(relist_seconds, 2),
        "relist_max_loop_stall_ms": round(relist_stall * 1000, 1),
        "rss_mb": {
            "before_imports": round(before_import, 1),
            "after_imports": round(imported, 1),
            "after_sync": round(rss, 1),
            "peak": round(peak, 1),
        },
        "decide_us": {
            "full_state_fenced_allow": latency_us(lambda: decide(allow, view, DEFAULT_SETTINGS)),
            "full_state_unfenced_deny": latency_us(lambda: decide(deny, view, DEFAULT_SETTINGS)),
            "two_namespaces_fenced_allow": latency_us(
                lambda: decide(allow, small, DEFAULT_SETTINGS)
            ),
            "two_namespaces_unfenced_deny": latency_us(
                lambda: decide(deny, small, DEFAULT_SETTINGS)
            ),
            "empty_state_deny": latency_us(lambda: decide(allow, empty, DEFAULT_SETTINGS)),
        },
        "verdicts": [
            decide(allow, view, DEFAULT_SETTINGS).verdict,
            decide(deny, view, DEFAULT_SETTINGS).verdict,
        ],
    }
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await api.close()
    return result


def measure_sdk_informer(kubeconfig: Path, expected: int) -> dict[str, Any]:
    """For comparison: the client's thread-based `kubernetes.informer` over NetworkPolicies."""
    from kubernetes import client, config
    from kubernetes.informer import SharedInformer

    api = config.new_client_from_config(config_file=str(kubeconfig))
    informer = SharedInformer(client.NetworkingV1Api(api).list_network_policy_for_all_namespaces)
    started = time.perf_counter()
    informer.start()
    while len(informer.cache.list()) < expected:
        time.sleep(0.05)
        if time.perf_counter() - started > 900:
            break
    took = time.perf_counter() - started
    rss, peak = rss_mb()  # (no stop(): it joins a thread blocked in its watch; the process ends)
    return {
        "networkpolicies": len(informer.cache.list()),
        "sync_seconds": round(took, 2),
        "rss_mb": round(rss, 1),
        "peak_mb": round(peak, 1),
    }


def child(kubeconfig: Path, *flags: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--kubeconfig", str(kubeconfig), *flags],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        return {"failed": f"exit {out.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--per-namespace", type=int, default=5, help="policies each (max 5)")
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--kubeconfig", type=Path, help="a cluster to use instead of a local one")
    parser.add_argument("--fill", action="store_true", help="with --kubeconfig: fill it first")
    parser.add_argument("--sdk-informer", action="store_true", help="also time kubernetes.informer")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure-sdk", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(asyncio.run(measure(args.kubeconfig, args.namespaces))))
        return 0
    if args.measure_sdk is not None:
        print(json.dumps(measure_sdk_informer(args.kubeconfig, args.measure_sdk)), flush=True)
        os._exit(0)  # its watch thread may be writing: a normal exit can abort on the stdout lock

    plane = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from controlplane import ControlPlane

        plane = ControlPlane()
        plane.start()
        kubeconfig = plane.kubeconfig_path
        print(f"local control plane up in {plane.start_seconds:.1f}s")
    try:
        if plane is not None or args.fill:
            total = args.namespaces * args.per_namespace
            print(f"filling: {args.namespaces} namespaces, {total} networkpolicies")
            server, token, ca = credentials(kubeconfig)
            started = time.perf_counter()
            filler = Filler(server, token, ca, args.concurrency)
            asyncio.run(filler.fill(args.namespaces, args.per_namespace))
            print(
                f"  filled in {time.perf_counter() - started:.1f}s"
                f" ({filler.created} created, {filler.existing} already there)"
            )
        print("cold sync (fresh process):")
        result = child(kubeconfig, "--measure", "--namespaces", str(args.namespaces))
        for key, value in result.items():
            print(f"  {key}: {value}")
        if args.sdk_informer:
            expected = result["policies_in_bench_namespaces"]
            print("kubernetes.informer.SharedInformer over NetworkPolicies (fresh process):")
            for key, value in child(kubeconfig, "--measure-sdk", str(expected)).items():
                print(f"  {key}: {value}")
    finally:
        if plane is not None:
            plane.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
