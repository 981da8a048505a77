"""The informer at scale: cold sync, memory and decision latency with 10,000 namespaces and 50,000
NetworkPolicies in a real kube-apiserver.

Run as `python tests/bench/bench_informer.py` (starts a local control plane from
tests/e2e/controlplane.py, fills it, measures, stops it) or `--kubeconfig FILE` for a cluster that
is already filled (`--fill` fills it first). The measurement runs in a fresh child process, so the
RSS it reports is a webhook's: the imports, the client, the informer's state. `--in-process`
measures the informer alone against a scripted API server in memory (the same pages, no HTTP):
cold sync, a re-list while serving, and the loop stalls and collector pauses each causes. Prints
numbers, asserts nothing about time (targets: cold sync <= 30 s, RSS <= 250 MB).
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

    from webhook.cluster.live import build
    from webhook.cluster.state import Resource
    from webhook.cluster.transport import connect
    from webhook.cluster.view import StaticView
    from webhook.decide import decide
    from webhook.server import Runtime
    from webhook.settings import DEFAULT_SETTINGS

    imported = rss_mb()[0]
    api, _ = await connect(kubeconfig)
    view = build(api)
    runtime = Runtime(settings=DEFAULT_SETTINGS, cluster=view)
    with LoopWatch() as cold:  # the longest the loop could not answer a request during sync
        started = time.perf_counter()
        task = asyncio.create_task(view.informer.run(runtime))
        while not view.synced:
            await asyncio.sleep(0.01)
        sync_seconds = time.perf_counter() - started
    gc.collect()
    rss, peak = rss_mb()
    policies = sum(
        len(f.policies) for n in range(namespaces) if (f := view.namespace(f"{PREFIX}-{n:05d}"))
    )

    # A re-list while serving (what a 410 Gone costs): nothing changed, so facts are kept.
    with LoopWatch() as relist:
        started = time.perf_counter()
        await view.informer.relist(runtime)
        relist_seconds = time.perf_counter() - started
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
        "max_loop_stall_ms": cold.report()["max_loop_stall_ms"],
        "cold_sync_gc": {k: v for k, v in cold.report().items() if k.startswith("gc_")},
        "relist_both_seconds": round(relist_seconds, 2),
        "relist_max_loop_stall_ms": relist.report()["max_loop_stall_ms"],
        "relist_gc": {k: v for k, v in relist.report().items() if k.startswith("gc_")},
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


# --- the informer alone, against a scripted API server in memory ---------------------------------


def as_served(obj: dict[str, Any], index: int, version: int) -> dict[str, Any]:
    """An object as kube-apiserver returns it in a LIST: uid, versions, managedFields, defaults."""
    meta = obj["metadata"]
    served = {
        **meta,
        "uid": f"00000000-0000-4000-8000-{index:012d}",
        "resourceVersion": str(version),
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [
            {
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": obj["apiVersion"],
                "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, "f:spec": {}},
            }
        ],
    }
    out = {**obj, "metadata": served}
    spec = out.get("spec")
    if obj["kind"] == "NetworkPolicy" and isinstance(spec, dict) and "policyTypes" not in spec:
        types = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
        out["spec"] = {**spec, "policyTypes": types}
    return out


class InMemoryApi:
    """LIST pages from pre-serialised bodies (parsed with orjson per call, as the transport does);
    watches that stay open and silent."""

    def __init__(self, namespaces: int, per_namespace: int, page_size: int = 500) -> None:
        from webhook.cluster.informer import PATHS
        from webhook.cluster.state import Resource

        names = [f"{PREFIX}-{i:05d}" for i in range(namespaces)]
        ns_objects = [
            as_served(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": n,
                        "labels": {"team": f"t{i % 50}", "kubernetes.io/metadata.name": n},
                    },
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
                i,
                1000 + i,
            )
            for i, n in enumerate(names)
        ]
        policies = [
            as_served(p, 10**6 + j, 10**6 + j)
            for j, p in enumerate(
                p for i, n in enumerate(names) for p in policies_for(n, i)[:per_namespace]
            )
        ]
        self.count = {
            Resource.NAMESPACES: len(ns_objects),
            Resource.NETWORK_POLICIES: len(policies),
        }
        self.version = 10**7
        self.pages: dict[str, list[bytes]] = {}
        for resource, items in (
            (Resource.NAMESPACES, ns_objects),
            (Resource.NETWORK_POLICIES, policies),
        ):
            chunks = [items[i : i + page_size] for i in range(0, len(items), page_size)] or [[]]
            self.pages[PATHS[resource]] = [
                orjson.dumps(
                    {
                        "kind": "List",
                        "metadata": {
                            "resourceVersion": str(self.version),
                            **({"continue": str(k + 1)} if k + 1 < len(chunks) else {}),
                        },
                        "items": chunk,
                    }
                )
                for k, chunk in enumerate(chunks)
            ]

    async def get(
        self, path: str, query: Any = (), *, timeout: float, accept: str = "application/json"
    ) -> dict[str, Any]:
        await asyncio.sleep(0)  # an answer arrives in a later turn of the loop, as over HTTP
        page: dict[str, Any] = orjson.loads(self.pages[path][int(dict(query).get("continue", "0"))])
        return page

    def watch(self, path: str, query: Any, *, timeout: float) -> Any:
        return _SilentWatch()


class _SilentWatch:
    async def __aenter__(self) -> _SilentWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def readline(self) -> bytes:
        await asyncio.Event().wait()
        return b""


class LoopWatch:
    """The longest the loop could not run a 5 ms timer, and the collector's pauses meanwhile."""

    def __init__(self) -> None:
        self.stall = 0.0
        self.gc_pauses: list[tuple[int, float]] = []
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_started))

    async def _tick(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            self.stall = max(self.stall, time.perf_counter() - t0 - 0.005)

    def __enter__(self) -> LoopWatch:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        assert self._task is not None
        self._task.cancel()

    def report(self) -> dict[str, Any]:
        full = [s for g, s in self.gc_pauses if g == 2]
        return {
            "max_loop_stall_ms": round(self.stall * 1000, 1),
            "gc_collections": len(self.gc_pauses),
            "gc_full_collections": len(full),
            "gc_max_pause_ms": round(max((s for _, s in self.gc_pauses), default=0.0) * 1000, 1),
            "gc_total_ms": round(sum(s for _, s in self.gc_pauses) * 1000, 1),
        }


async def measure_in_process(namespaces: int, per_namespace: int, relists: int) -> dict[str, Any]:
    from webhook.cluster.informer import Informer
    from webhook.cluster.state import Resource
    from webhook.cluster.view import StaticView
    from webhook.server import Runtime
    from webhook.settings import DEFAULT_SETTINGS

    started = time.perf_counter()
    api = InMemoryApi(namespaces, per_namespace)
    built = time.perf_counter() - started
    gc.collect()
    informer = Informer(api)
    runtime = Runtime(settings=DEFAULT_SETTINGS, cluster=StaticView([]))
    await asyncio.sleep(0.02)  # the timer's first turns
    with LoopWatch() as cold:
        started = time.perf_counter()
        task = asyncio.create_task(informer.run(runtime))
        while not informer.synced:
            await asyncio.sleep(0.001)
        sync_seconds = time.perf_counter() - started
        await asyncio.sleep(0.05)
    relist: list[dict[str, Any]] = []
    for _ in range(relists):  # what a 410 Gone costs while serving: nothing changed, facts kept
        with LoopWatch() as watch:
            started = time.perf_counter()
            await informer.relist(runtime)
            seconds = time.perf_counter() - started
            await asyncio.sleep(0.05)
        relist.append({"seconds": round(seconds, 2), **watch.report()})
    rss, peak = rss_mb()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "namespaces": len(informer.state),
        "listed": {r.value: api.count[r] for r in Resource},
        "pages_built_seconds": round(built, 1),
        "cold_sync_seconds": round(sync_seconds, 2),
        "cold_sync": cold.report(),
        "relist_both": relist,
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
    parser.add_argument(
        "--in-process", action="store_true", help="the informer alone, a scripted API in memory"
    )
    parser.add_argument("--relists", type=int, default=3, help="with --in-process (default 3)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure-sdk", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.in_process:
        import structlog

        structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # numbers only
        result = asyncio.run(measure_in_process(args.namespaces, args.per_namespace, args.relists))
        print(f"informer in process, {args.namespaces} namespaces:")
        for key, value in result.items():
            print(f"  {key}: {value}")
        return 0
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
