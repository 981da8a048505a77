"""Benchmark: kubefence over TLS with keep-alive against the ceiling of a trivial aiohttp TLS server.

Run: `python tests/bench/bench_server.py [--seconds 10] [--connections 16]` (needs wrk). The
server is pinned to CPU 0 and wrk to CPU 1 where there are two; the report gives requests/s, the
ratio to the ceiling, p50/p99 latency and CPU per request for three reviews (a Deployment CREATE,
a NetworkPolicy UPDATE and a Deployment UPDATE that changes the pod template, all in the demo's
fenced namespace, decision log line included), and the cost of parse + `decide` alone.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from webhook import certs
from webhook.admission import parse_review
from webhook.commands.demo import demo_cluster, sample_review
from webhook.config import load_settings
from webhook.decide import decide

CEILING = """
import ssl, sys
from aiohttp import web
BODY = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}'
async def validate(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/validate", validate)
app.router.add_get("/readyz", lambda r: web.Response(text="ok"))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=ctx, access_log=None, print=None)
"""

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def policy_update(uid: str) -> dict[str, Any]:
    """The demo's `allow-dns` policy gains DNS over TLS: the guard and allow-all both judge it."""
    old = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "allow-dns",
            "namespace": "shop",
            "uid": "uid-allow-dns",
            "creationTimestamp": "2026-01-01T00:00:01Z",
        },
        "spec": {
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
    }
    new = orjson.loads(orjson.dumps(old))
    new["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 853})
    gvr = {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"}
    kind = {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"}
    return _update(uid, gvr=gvr, kind=kind, name="allow-dns", new=new, old=old)


def workload_update(uid: str) -> dict[str, Any]:
    """A Deployment rollout: the pod template's image changes (judged by the UPDATE ratchet)."""
    created = sample_review(uid, "shop", "web")["request"]
    old = created["object"]
    new = orjson.loads(orjson.dumps(old))
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    return _update(uid, gvr=created["resource"], kind=created["kind"], name="web", new=new, old=old)


def _update(
    uid: str,
    *,
    gvr: dict[str, str],
    kind: dict[str, str],
    name: str,
    new: dict[str, Any],
    old: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": kind,
            "resource": gvr,
            "requestKind": kind,
            "requestResource": gvr,
            "name": name,
            "namespace": "shop",
            "operation": "UPDATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": False,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


REVIEWS = {
    "Deployment CREATE": lambda: sample_review("bench", "shop", "web"),
    "NetworkPolicy UPDATE": lambda: policy_update("bench"),
    "Deployment UPDATE": lambda: workload_update("bench"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def wait_ready(port: int, ca: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    for _ in range(200):
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/readyz", context=context, timeout=1
            ):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not become ready")


def run_wrk(port: int, lua: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), f"https://127.0.0.1:{port}/validate"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result = {"rps": rps, "non2xx": float(non2xx.group(1)) if non2xx else 0.0}
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}_ms"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: robust to other load on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    args: list[str], port: int, ca: Path, luas: dict[str, Path], *, seconds: int, connections: int
) -> dict[str, dict[str, float]]:
    """One server process, one wrk run per review body; CPU per request from /proc."""
    proc = subprocess.Popen([*pin(0), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, dict[str, float]] = {}
    try:
        wait_ready(port, ca)
        for name, lua in luas.items():
            run_wrk(port, lua, 2, connections)  # warm-up
            cpu = cpu_seconds(proc.pid)
            result = run_wrk(port, lua, seconds, connections)
            result["cpu_us"] = (cpu_seconds(proc.pid) - cpu) / (result["rps"] * seconds) * 1e6
            results[name] = result
        return results
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def decide_cost() -> tuple[float, float]:
    cluster, settings = demo_cluster(), load_settings(None)
    body = orjson.dumps(sample_review("bench", "shop", "web"))
    request = parse_review(body)
    n = 20000
    decide_us = (
        min(timeit.repeat(lambda: decide(request, cluster, settings), number=n, repeat=5)) / n * 1e6
    )
    full_us = (
        min(
            timeit.repeat(lambda: decide(parse_review(body), cluster, settings), number=n, repeat=5)
        )
        / n
        * 1e6
    )
    return decide_us, full_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--audit-policy",
        type=Path,
        help="serve with auditScope.policyFile set to this file (tests/e2e/audit-policy.yaml: as"
        " the e2e suite runs kubefence); default none, as the earlier numbers were measured",
    )
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kubefence-bench-"))
    paths = certs.ensure_dev_certs(work / "certs")
    state = work / "state"
    state.mkdir()
    demo = Path(__file__).resolve().parents[2] / "webhook" / "demo" / "cluster.yaml"
    shutil.copy(demo, state / "cluster.yaml")
    luas: dict[str, Path] = {}
    for i, (name, make) in enumerate(REVIEWS.items()):
        body = work / f"review-{i}.json"
        body.write_bytes(orjson.dumps(make()))
        luas[name] = work / f"post-{i}.lua"
        luas[name].write_text(LUA.replace("{body}", str(body)))
    ceiling_script = work / "ceiling.py"
    ceiling_script.write_text(CEILING)

    port = free_port()
    ceiling = measure(
        [sys.executable, str(ceiling_script), str(port), str(paths.cert), str(paths.key)],
        port,
        paths.ca_cert,
        {"aiohttp ceiling": luas["Deployment CREATE"]},
        seconds=opts.seconds,
        connections=opts.connections,
    )
    port = free_port()
    serve = [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--state",
        str(state),
        "--cert",
        str(paths.cert),
        "--key",
        str(paths.key),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--drain-seconds",
        "0",
    ]
    if opts.audit_policy is not None:
        config = work / "config.yaml"
        config.write_text(f"auditScope:\n  policyFile: {opts.audit_policy.resolve()}\n")
        serve += ["--config", str(config)]
    kubefence = measure(
        serve, port, paths.ca_cert, luas, seconds=opts.seconds, connections=opts.connections
    )
    decide_us, full_us = decide_cost()

    print(
        f"wrk: 1 thread, {opts.connections} keep-alive TLS connections, {opts.seconds}s; server on one core"
        f"; audit Policy: {opts.audit_policy or 'none'}"
    )
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU us/req':>12}{'non-2xx':>10}")
    for name, r in (*ceiling.items(), *kubefence.items()):
        print(
            f"{name:22}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
            f"{r['cpu_us']:>12.1f}{r['non2xx']:>10.0f}"
        )
    base, create = ceiling["aiohttp ceiling"], kubefence["Deployment CREATE"]
    print(
        f"ratio kubefence / ceiling (Deployment CREATE): {create['rps'] / base['rps']:.2f} "
        f"(req/s), {base['cpu_us'] / create['cpu_us']:.2f} (CPU time per request)"
    )
    print(
        f"decide() alone: {decide_us:.1f} us; parse_review + decide: {full_us:.1f} us (Deployment CREATE, fenced namespace)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
