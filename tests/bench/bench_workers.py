"""Serving throughput, 1 worker against N: `wrk` over TLS keep-alive, POST /validate with a
Deployment CREATE review as kube-apiserver sends it (two containers, managedFields: about 3 KB).

Run as `python tests/bench/bench_workers.py [--workers 1 2] [--seconds 15] [--connections 32]`;
needs `wrk` on PATH. Prints requests/s and latency percentiles per worker count; asserts nothing
about time. wrk runs on the same machine and takes its share of the CPUs.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from webhook import certs


def deployment_review(uid: str = "bench-1") -> dict[str, Any]:
    """A Deployment CREATE in the fenced namespace `shop` of the demo cluster (allowed)."""
    labels = {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop"}
    container = {
        "name": "checkout",
        "image": "registry.example.com/shop/checkout:2.14.3",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "DB_HOST", "value": "postgres.shop.svc.cluster.local"},
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "checkout-db", "key": "password"}},
            },
        ],
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}, "periodSeconds": 10},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    sidecar = {
        "name": "proxy",
        "image": "registry.example.com/mesh/proxy:1.22.0",
        "args": ["--listen=:15001", "--upstream=127.0.0.1:8080"],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "labels": labels,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "deployment.kubernetes.io/revision": "1",
            },
            "managedFields": [
                {
                    "manager": "kubectl-client-side-apply",
                    "operation": "Update",
                    "apiVersion": "apps/v1",
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {"f:labels": {f"f:{k}": {} for k in labels}},
                        "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {}},
                    },
                }
            ],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "checkout",
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container, sidecar],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": labels},
                        }
                    ],
                },
            },
        },
    }
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    gvr = {"group": "apps", "version": "v1", "resource": "deployments"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": "checkout",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:ci:deployer",
                "uid": "0d4a3a6e-5b7c-4d7e-9a51-7d0f1c2b3a4e",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:ci"],
            },
            "object": deployment,
            "oldObject": None,
            "dryRun": False,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": "CreateOptions",
                "fieldManager": "kubectl",
            },
        },
    }


def lua_script(body: bytes) -> str:
    assert b"]==]" not in body
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
    )


def start_server(
    workers: int, port: int, material: certs.Paths, state: Path, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "webhook", "serve",
                "--state", str(state), "--cert", str(material.cert), "--key", str(material.key),
                "--host", "127.0.0.1", "--port", str(port), "--drain-seconds", "0",
                "--workers", str(workers),
            ],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while log.read_bytes().count(b'"server.started"') < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return proc


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, str]:
    out = subprocess.run(
        [
            "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(script), url,
        ],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    result = {"raw": out}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = m.group(1)
    for pct in ("50", "90", "99"):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.MULTILINE):
            result[f"p{pct}"] = m.group(1)
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = m.group(1) if m else "?"
    errors = re.search(r"Socket errors:.*|Non-2xx or 3xx responses: \d+", out)
    result["errors"] = errors.group(0) if errors else "none"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=18643)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install -y wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kubefence-bench-") as tmp:
        root = Path(tmp)
        material = certs.ensure_dev_certs(root / "certs")
        state = root / "state"
        state.mkdir()
        demo = importlib.resources.files("webhook.demo").joinpath("cluster.yaml")
        (state / "cluster.yaml").write_text(demo.read_text("utf-8"), encoding="utf-8")
        body = orjson.dumps(deployment_review())
        script = root / "post.lua"
        script.write_text(lua_script(body), encoding="utf-8")
        print(
            f"kubefence serve over TLS keep-alive: wrk -t2 -c{args.connections}"
            f" -d{args.seconds}s, POST /validate, {len(body)} B Deployment CREATE (allowed),"
            f" {os.cpu_count()} CPUs shared with wrk"
        )
        print(f"{'workers':>7} {'req/s':>9} {'p50':>9} {'p90':>9} {'p99':>9}  requests  errors")
        for workers in args.workers:
            proc = start_server(workers, args.port, material, state, root / f"serve-{workers}.log")
            url = f"https://127.0.0.1:{args.port}/validate"
            try:
                wrk(url, script, 3, args.connections)  # warm-up
                r = wrk(url, script, args.seconds, args.connections)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            print(
                f"{workers:>7} {r.get('rps', '?'):>9} {r.get('p50', '?'):>9}"
                f" {r.get('p90', '?'):>9} {r.get('p99', '?'):>9}  {r['requests']:>8}  {r['errors']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
