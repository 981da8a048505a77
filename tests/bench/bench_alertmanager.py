"""Benchmark: alert delivery latency of `kubefence monitor --alertmanager` into a real Alertmanager.

A real Alertmanager v0.35.0 (hack/build-control-plane.sh alertmanager) and a real `kubefence
monitor` process on loopback. Each round POSTs one EventList holding one bypass (a pod create no
webhook decided, in a namespace of its own, so a new alert) to the monitor's `/audit`, as the API
server's audit webhook backend does, and polls Alertmanager's `GET /api/v2/alerts` (every 2 ms)
until that alert is there: the latency is from the POST to the alert being visible, the API
server's batching (`--audit-webhook-batch-max-wait`) not included. The monitor's own histogram
(raise to Alertmanager's 2xx) is printed beside it. Then a burst: one EventList of `--burst`
bypasses, each a new alert, timed until Alertmanager holds all of them.

    python tests/bench/bench_alertmanager.py [--rounds 200] [--burst 2000]
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from alertmanager_process import Alertmanager, binary, event_list  # noqa: E402
from alertmanager_process import bypass_event as bypass  # noqa: E402
from controlplane import free_port  # noqa: E402

from webhook import certs  # noqa: E402

WEBHOOK = "validate.kubefence.io"


def matching(am: Alertmanager, matcher: str) -> int:
    query = urllib.parse.quote(matcher)
    return len(am.get(f"/api/v2/alerts?filter={query}"))


def metric(probe_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    if not os.access(binary(), os.X_OK):
        sys.exit(f"no {binary()}: run hack/build-control-plane.sh alertmanager")
    with tempfile.TemporaryDirectory(prefix="kubefence-bench-am-") as tmp:
        work = Path(tmp)
        am = Alertmanager(work / "am")
        am.start()
        ca_cert, ca_key = certs.generate_ca()
        cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
        paths = certs.write_bundle(work / "certs", ca_cert, ca_key, cert, key)
        port, probe_port = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        monitor = subprocess.Popen(
            [
                sys.executable, "-m", "webhook", "monitor",
                "--cert", str(paths.cert), "--key", str(paths.key),
                "--insecure-allow-unauthenticated", "--host", "127.0.0.1", "--port", str(port),
                "--probe-port", str(probe_port), "--webhook-name", WEBHOOK,
                "--alertmanager", am.url,
            ],
            stdout=subprocess.DEVNULL,
            env=env,
        )  # fmt: skip
        try:
            run(args, am, port, probe_port, ssl.create_default_context(cafile=str(paths.ca_cert)))
        finally:
            monitor.terminate()
            monitor.wait(30)
            am.stop()


def run(
    args: argparse.Namespace, am: Alertmanager, port: int, probe_port: int, tls: ssl.SSLContext
) -> None:
    url = f"https://127.0.0.1:{port}/audit"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/readyz", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    def post(body: bytes) -> None:
        request = urllib.request.Request(url, data=body, method="POST")
        with urllib.request.urlopen(request, context=tls, timeout=30) as r:
            assert r.status == 200

    latencies = []
    for i in range(args.rounds):
        namespace = f"bench-{i}"
        started = time.perf_counter()
        post(event_list([bypass(i, namespace, "bench-user")]))
        while not matching(am, f'namespace="{namespace}"'):
            time.sleep(0.002)
        latencies.append(time.perf_counter() - started)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    print(
        f"{args.rounds} alerts, POST /audit to visible in GET /api/v2/alerts:"
        f" median {statistics.median(latencies) * 1000:.1f} ms, p90 {pct(0.9):.1f} ms,"
        f" p99 {pct(0.99):.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    count = metric(probe_port, "kubefence_monitor_alertmanager_delivery_seconds_count")
    total = metric(probe_port, "kubefence_monitor_alertmanager_delivery_seconds_sum")
    print(f"monitor's histogram, raise to Alertmanager's 2xx: mean {total / count * 1000:.1f} ms")

    items = [bypass(100_000 + i, f"burst-{i}", "burst-user") for i in range(args.burst)]
    started = time.perf_counter()
    post(event_list(items))
    while matching(am, 'user="burst-user"') < args.burst:
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    dropped = metric(probe_port, "kubefence_monitor_alertmanager_dropped_alerts_total")
    print(
        f"burst: {args.burst} new alerts in one EventList all in Alertmanager after"
        f" {seconds:.2f} s ({args.burst / seconds:,.0f} alerts/s); dropped {dropped:.0f}"
    )


if __name__ == "__main__":
    main()
