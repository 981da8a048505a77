"""Benchmark: the cluster tier at size, with kubefence enforcing against the same run without it.

Run: `python tests/bench/bench_cluster_scale.py [--nodes 20] [--namespaces 100] [--deployments
100] [--replicas 5] [--order none,kubefence]` (needs the cluster tier, hack/build-control-plane.sh;
issue 25's full size is --nodes 100 --namespaces 1000 --deployments 1000 --replicas 10). Each run
starts a fresh cluster tier (tests/e2e/cluster.py: API server, etcd, controller manager,
scheduler, kwok with --nodes fake Nodes), creates the fenced namespaces, then the Deployments
(tests/e2e/scale_workload.py), waits until every rollout has completed, rolls every Deployment
(a Pod-template change) and waits again. The `kubefence` run registers kubefence as the cluster
tier does (a host process, enforce, the chart's ValidatingWebhookConfiguration, failurePolicy
Fail); the `none` run registers nothing.

Before the Deployments, each namespace's fence must be admissible (kubefence has seen it) and
its default ServiceAccount exist. Printed per run: seconds for the creation rollouts and for the
rolling update, both from the first request to the last Deployment complete (polled every second
or so), and their ratio to the `none` run; for kubefence, over the workload only (after
registration): the API server's own
`apiserver_admission_webhook_admission_duration_seconds` for each of the chart's webhooks (mean
from sum/count, p50 and p99 interpolated inside its buckets, with the bucket bound), kubefence's
process CPU time divided by its decision lines (CPU per admitted request: the informer's work
included), its peak RSS (VmHWM), and informer memory: its RSS once it has seen every namespace
and fence, less its RSS before they were created. Rollouts run at the controllers' pace: the
controller manager's client rate limit (its default --kube-api-qps) bounds Pod creation in both
runs alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench_floor import quantile  # noqa: E402
from cluster import Cluster, FencedCluster, missing_cluster_binaries, wait_for  # noqa: E402
from scale_workload import (  # noqa: E402
    Size,
    admissible,
    deployments_list,
    fences_list,
    namespace_names,
    namespaces_list,
    service_accounts_ready,
    submit,
    wait_for_rollouts,
)
from test_webhook import webhook_histogram  # noqa: E402

PREFIX = "scale"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and of children it has waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def histogram_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    buckets = {le: n - before["buckets"].get(le, 0.0) for le, n in after["buckets"].items()}
    return {
        "buckets": buckets,
        "sum": after["sum"] - before["sum"],
        "count": after["count"] - before["count"],
    }


def run(kind: str, nodes: int, size: Size, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {"run": kind}
    c = Cluster(nodes=nodes, start_timeout=600)
    c.start()
    out["cluster_start_s"] = c.start_seconds
    fenced: FencedCluster | None = None
    try:
        if kind == "kubefence":
            fenced = FencedCluster.start(c, Path(tempfile.mkdtemp(prefix="kf-scale-")))
            hook_names = [w["name"] for w in fenced.configuration["webhooks"]]
            pid = fenced.hook.process.pid
            rss_before, _ = memory_mb(pid)
            cpu_before = cpu_seconds(pid)
            decisions_before = len(fenced.hook.decisions())
            hist_before = {n: webhook_histogram(c.control_plane, n) for n in hook_names}
        names = namespace_names(PREFIX, size)
        t0 = time.monotonic()
        submit(c, "create", namespaces_list(PREFIX, size))
        submit(c, "create", fences_list(PREFIX, size))
        # Under enforce a Deployment is admissible once kubefence has seen its namespace's fence.
        wait_for(lambda: admissible(c, names[-1]) and admissible(c, names[0]), "fences seen",
                 timeout=timeout)  # fmt: skip
        wait_for(lambda: service_accounts_ready(c, PREFIX, size), "default ServiceAccounts",
                 timeout=timeout)  # fmt: skip
        out["namespaces_s"] = time.monotonic() - t0
        if fenced is not None:
            out["informer_mb"] = memory_mb(pid)[0] - rss_before

        t1 = time.monotonic()
        submit(c, "create", deployments_list(PREFIX, size, revision=1))
        wait_for_rollouts(c, size.deployments, timeout)
        out["create_rollouts_s"] = time.monotonic() - t1
        t2 = time.monotonic()
        submit(c, "replace", deployments_list(PREFIX, size, revision=2))
        wait_for_rollouts(c, size.deployments, timeout)
        out["rolling_update_s"] = time.monotonic() - t2

        if fenced is not None:
            decisions = fenced.hook.decisions()[decisions_before:]
            out["decisions"] = len(decisions)
            out["denied"] = sum(1 for d in decisions if not d["allowed"])
            cpu = cpu_seconds(pid) - cpu_before
            out["cpu_s"] = cpu
            out["cpu_per_decision_us"] = cpu / max(len(decisions), 1) * 1e6
            out["rss_mb"], out["peak_rss_mb"] = memory_mb(pid)
            out["webhooks"] = {}
            for n in hook_names:
                h = histogram_delta(webhook_histogram(c.control_plane, n), hist_before[n])
                if not h["count"]:
                    continue
                p50, p50_le = quantile(h["buckets"], h["count"], 0.50)
                p99, p99_le = quantile(h["buckets"], h["count"], 0.99)
                out["webhooks"][n] = {
                    "count": int(h["count"]),
                    "mean_ms": h["sum"] / h["count"] * 1000,
                    "p50_ms": p50 * 1000,
                    "p50_bucket_ms": p50_le * 1000,
                    "p99_ms": p99 * 1000,
                    "p99_bucket_ms": p99_le * 1000,
                }
    finally:
        if fenced is not None:
            fenced.stop()
        c.cleanup()
    return out


def show(result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    line = (
        f"{result['run']:>9}: cluster up {result['cluster_start_s']:.1f}s, namespaces+fences"
        f" {result['namespaces_s']:.1f}s, creation rollouts {result['create_rollouts_s']:.1f}s,"
        f" rolling update {result['rolling_update_s']:.1f}s"
    )
    if baseline is not None and baseline is not result:
        line += (
            f" (ratio to no webhook: {result['create_rollouts_s'] / baseline['create_rollouts_s']:.2f}"
            f" / {result['rolling_update_s'] / baseline['rolling_update_s']:.2f})"
        )
    print(line)
    if "decisions" in result:
        print(
            f"           kubefence: {result['decisions']} decisions ({result['denied']} denied),"
            f" CPU {result['cpu_s']:.1f}s = {result['cpu_per_decision_us']:.0f} us a decision,"
            f" RSS {result['rss_mb']:.0f} MB, peak {result['peak_rss_mb']:.0f} MB,"
            f" informer (namespaces+fences) {result['informer_mb']:.1f} MB"
        )
        for name, w in result["webhooks"].items():
            print(
                f"           API server, webhook {name}: {w['count']} calls, mean"
                f" {w['mean_ms']:.2f} ms, p50 {w['p50_ms']:.2f} ms (bucket <= {w['p50_bucket_ms']:g}),"
                f" p99 {w['p99_ms']:.2f} ms (bucket <= {w['p99_bucket_ms']:g})"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--order", default="none,kubefence", help="runs, comma-separated")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a wait may take")
    args = parser.parse_args()
    missing = missing_cluster_binaries()
    if missing:
        print(f"bench_cluster_scale: missing {', '.join(map(str, missing))}: run"
              " hack/build-control-plane.sh", file=sys.stderr)  # fmt: skip
        return 2
    runs = [r.strip() for r in args.order.split(",") if r.strip()]
    if not runs or any(r not in ("none", "kubefence") for r in runs):
        print("bench_cluster_scale: --order: runs are `none` or `kubefence`", file=sys.stderr)
        return 2
    size = Size(args.namespaces, args.deployments, args.replicas)
    print(
        f"{args.nodes} nodes, {size.namespaces} namespaces, {size.deployments} Deployments x"
        f" {size.replicas} replicas ({size.pods} Pods a revision), runs {', '.join(runs)};"
        f" started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        flush=True,
    )
    results = []
    for kind in runs:
        result = run(kind, args.nodes, size, args.timeout)
        results.append(result)
        baseline = next((r for r in results if r["run"] == "none"), None)
        show(result, baseline)
        sys.stdout.flush()
    baseline = next((r for r in results if r["run"] == "none"), None)
    if baseline is not None:
        for r in results:
            if r["run"] == "kubefence" and results.index(r) < results.index(baseline):
                show(r, baseline)  # its ratio, now that the baseline exists
    print(f"finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
