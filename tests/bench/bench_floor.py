"""Benchmark: kubefence against the floor, a no-op aiohttp TLS webhook, behind the real API server.

Run: `python tests/bench/bench_floor.py [--requests 300] [--rounds 2]` (needs the control plane
of the e2e suite, hack/build-control-plane.sh). It starts the local etcd and kube-apiserver
(tests/e2e/controlplane.py), fences one namespace, then, for 1 and 4 client threads, registers in
turn kubefence (as the e2e suite runs it, audit Policy included) and a no-op aiohttp webhook over
the same kind of TLS certificate that answers `allowed: true` with the request's uid, each the
only webhook registered, and creates `--requests` Deployments per client (dry run, so nothing
accumulates) through the API server. Rounds alternate the two so that drift of a shared machine
falls on both. Printed per webhook and client count: the API server's own
`apiserver_admission_webhook_admission_duration_seconds` mean and p99 (interpolated inside its
coarse buckets, with the bucket bound), the client-side p50/p99 of a create, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from controlplane import ControlPlane, free_port, missing_binaries  # noqa: E402
from kubefence_process import (  # noqa: E402
    AUDIT_POLICY,
    WEBHOOK_NAME,
    RunningWebhook,
    webhook_configuration,
)
from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from test_webhook import deployment, webhook_histogram  # noqa: E402

from webhook import certs  # noqa: E402

NOOP_NAME = "noop.floor.kubefence.io"
NOOP_CONFIGURATION = "kubefence-floor-noop"
METRIC = "apiserver_admission_webhook_admission_duration_seconds"

NOOP = """
import ssl, sys
import orjson
from aiohttp import web
async def validate(request):
    uid = orjson.loads(await request.read())["request"]["uid"]
    return web.Response(body=orjson.dumps({"apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview", "response": {"uid": uid, "allowed": True}}),
        content_type="application/json")
app = web.Application()
app.router.add_post("/validate", validate)
app.router.add_get("/readyz", lambda r: web.Response(text="ok"))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=ctx, access_log=None, print=None)
"""


def histogram(cp: ControlPlane, name: str) -> dict[str, Any]:
    """The API server's admission histogram for one webhook, as the e2e latency test reads it."""
    return webhook_histogram(cp, name)


def quantile(buckets: dict[float, float], count: float, q: float) -> tuple[float, float]:
    """The q-quantile interpolated linearly inside its bucket (as Prometheus's
    histogram_quantile does), and that bucket's upper bound."""
    lower, below = 0.0, 0.0
    for le, n in sorted(buckets.items()):
        if n >= q * count:
            if le == float("inf"):
                return lower, le
            inside = n - below
            share = (q * count - below) / inside if inside else 1.0
            return lower + (le - lower) * share, le
        lower, below = le, n
    return lower, float("inf")


def load(kubeconfig: Path, namespace: str, clients: int, requests: int) -> list[float]:
    """`clients` threads each creating `requests` Deployments (dry run); client-side seconds."""
    times: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        apps = client.AppsV1Api(api)
        mine = []
        try:
            for k in range(requests):
                start = time.perf_counter()
                apps.create_namespaced_deployment(
                    namespace, deployment(f"web-{i}-{k}"), dry_run="All"
                )
                mine.append(time.perf_counter() - start)
        except BaseException as exc:
            errors.append(exc)
        finally:
            api.close()
            with lock:
                times.extend(mine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times


def measure(
    cp: ControlPlane, name: str, namespace: str, clients: int, requests: int
) -> dict[str, float]:
    load(cp.kubeconfig_path, namespace, 1, 20)  # warm-up: connections, caches
    before = histogram(cp, name)
    times = load(cp.kubeconfig_path, namespace, clients, requests)
    after = histogram(cp, name)
    count = after["count"] - before["count"]
    buckets = {le: n - before["buckets"].get(le, 0.0) for le, n in after["buckets"].items()}
    p99, bound = quantile(buckets, count, 0.99)
    times.sort()
    return {
        "count": count,
        "mean_ms": (after["sum"] - before["sum"]) / count * 1000,
        "p99_ms": p99 * 1000,
        "p99_bound_ms": bound * 1000,
        "client_p50_ms": statistics.median(times) * 1000,
        "client_p99_ms": times[int(0.99 * (len(times) - 1))] * 1000,
    }


class Noop:
    def __init__(self, work: Path) -> None:
        ca_cert, ca_key = certs.generate_ca()
        cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
        self.paths = certs.write_bundle(work / "noop-certs", ca_cert, ca_key, cert, key)
        script = work / "noop.py"
        script.write_text(NOOP)
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(self.port), str(self.paths.cert), str(self.paths.key)]
        )

    def register(self, kube: client.ApiClient, cp: ControlPlane, namespace: str) -> None:
        manifest = webhook_configuration(
            NOOP_CONFIGURATION,
            NOOP_NAME,
            f"https://127.0.0.1:{self.port}/validate",
            self.paths.ca_cert.read_bytes(),
        )
        client.AdmissionregistrationV1Api(kube).create_validating_webhook_configuration(manifest)
        # Registered once the API server calls it (its informer lags the create).
        deadline = time.monotonic() + 30
        while histogram(cp, NOOP_NAME)["count"] == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not call the no-op webhook")
            load(cp.kubeconfig_path, namespace, 1, 1)
            time.sleep(0.1)

    def unregister(self, kube: client.ApiClient) -> None:
        _delete(kube, NOOP_CONFIGURATION)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def gone(cp: ControlPlane, name: str, namespace: str) -> None:
    """Until the API server's informer has dropped an unregistered webhook: two creates in a row
    that do not call it (the two are never measured together)."""
    quiet = 0
    deadline = time.monotonic() + 30
    while quiet < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API server still calls {name}")
        before = histogram(cp, name)["count"]
        load(cp.kubeconfig_path, namespace, 1, 1)
        quiet = quiet + 1 if histogram(cp, name)["count"] == before else 0


def _delete(kube: client.ApiClient, name: str) -> None:
    try:
        client.AdmissionregistrationV1Api(kube).delete_validating_webhook_configuration(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="creates per client")
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    if missing_binaries():
        print("no local control plane: run hack/build-control-plane.sh", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kubefence-floor-"))
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with ControlPlane() as cp:
        kube = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
        namespace = "floor"
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
        client.NetworkingV1Api(kube).create_namespaced_network_policy(
            namespace,
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "default-deny"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            },
        )
        (work / "kubefence").mkdir()
        hook = RunningWebhook.start(work / "kubefence", cp.kubeconfig_path, AUDIT_POLICY)
        noop = Noop(work)
        try:
            for _ in range(opts.rounds):
                for clients in (1, 4):
                    hook.register(kube)
                    results.setdefault(("kubefence", clients), []).append(
                        measure(cp, WEBHOOK_NAME, namespace, clients, opts.requests)
                    )
                    hook.unregister(kube)
                    noop.register(kube, cp, namespace)
                    gone(cp, WEBHOOK_NAME, namespace)
                    results.setdefault(("no-op aiohttp", clients), []).append(
                        measure(cp, NOOP_NAME, namespace, clients, opts.requests)
                    )
                    noop.unregister(kube)
                    gone(cp, NOOP_NAME, namespace)
        finally:
            hook.unregister(kube)
            noop.unregister(kube)
            hook.stop()
            noop.stop()
            kube.close()

    print(
        f"API-server-measured webhook latency ({METRIC}), Deployment CREATE (dry run) in a fenced"
        f" namespace, {opts.requests} per client, {opts.rounds} alternating rounds; p99 interpolated"
        " inside the API server's buckets (bound in brackets); client = the create round trip"
    )
    header = f"{'webhook':16}{'clients':>8}{'round':>6}{'mean ms':>9}{'p99 ms':>14}"
    print(header + f"{'client p50':>12}{'client p99':>12}")
    for (name, clients), runs in results.items():
        for i, r in enumerate(runs, 1):
            print(
                f"{name:16}{clients:>8}{i:>6}{r['mean_ms']:>9.2f}"
                f"{r['p99_ms']:>7.2f} [{r['p99_bound_ms']:>4.0f}]"
                f"{r['client_p50_ms']:>12.2f}{r['client_p99_ms']:>12.2f}"
            )
    for clients in (1, 4):
        ours, floor = results[("kubefence", clients)], results[("no-op aiohttp", clients)]
        mean = statistics.mean(r["mean_ms"] for r in ours) / statistics.mean(
            r["mean_ms"] for r in floor
        )
        p99 = statistics.mean(r["p99_ms"] for r in ours) / statistics.mean(
            r["p99_ms"] for r in floor
        )
        per_round = ", ".join(
            f"{a['mean_ms'] / b['mean_ms']:.2f}" for a, b in zip(ours, floor, strict=True)
        )
        print(
            f"{clients} client(s): kubefence / no-op mean {mean:.2f} (rounds: {per_round}),"
            f" p99 {p99:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
