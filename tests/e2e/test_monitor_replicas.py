"""Two `kubefence monitor` replicas electing one active monitor on the real API server's Lease API:
only the holder is Ready (so a Service sends the audit batches to it alone), a follower refuses a
batch with 503 for the API server to re-send, and when the holder is killed (no release) the
other becomes Ready within the lease duration and a jittered retry. Every wait polls for its
condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from controlplane import ControlPlane, ExternalCluster, free_port
from kubefence_process import OWN_NAMESPACE
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook import certs

LEASE_DURATION, RETRY_PERIOD, JITTER = 15.0, 2.0, 1.2  # the elector's defaults (client-go's)
TAKEOVER = LEASE_DURATION + RETRY_PERIOD * (1 + JITTER)  # the latest a follower may take over
SLACK = 10.0  # process start, the follower's own request times, a loaded 2-core machine


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


@dataclass
class Replica:
    name: str
    work: Path
    port: int
    probe_port: int
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None

    def probe(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.probe_port}{path}", timeout=2
            ) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.alive() and self.probe("/readyz")[0] == 200

    def post(self, body: bytes, ca: Path) -> tuple[int, dict[str, Any]]:
        context = ssl.create_default_context(cafile=str(ca))
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/audit",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as r:
                return int(r.status), orjson.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def stderr(self) -> str:
        return (self.work / "stderr.log").read_text(errors="replace")


def start(work: Path, kubeconfig: Path, paths: certs.Paths, lease: str, name: str) -> Replica:
    work.mkdir(parents=True, exist_ok=True)
    port, probe_port = free_port(), free_port()
    args = [
        sys.executable, "-m", "webhook", "monitor",
        "--cert", str(paths.cert), "--key", str(paths.key),
        "--insecure-allow-unauthenticated",
        "--host", "127.0.0.1", "--port", str(port), "--probe-port", str(probe_port),
        "--kubeconfig", str(kubeconfig),
        "--leader-election-namespace", OWN_NAMESPACE,
        "--leader-election-id", lease,
    ]  # fmt: skip
    env = {**os.environ, "POD_NAME": name}
    with (work / "monitor.log").open("wb") as out, (work / "stderr.log").open("wb") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, env=env)
    replica = Replica(name, work, port, probe_port, process)
    poll(lambda: not replica.alive() or replica.probe("/healthz")[0] == 200, 30, "healthz")
    assert replica.alive(), replica.stderr()
    return replica


@pytest.fixture
def setup(
    control_plane: ControlPlane | ExternalCluster, kube: client.ApiClient, tmp_path: Path
) -> Iterator[tuple[list[Replica], str, Path]]:
    if not getattr(control_plane, "local", False):
        pytest.skip("the monitors run on loopback: local control plane only")
    try:
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": OWN_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(tmp_path / "certs", ca_cert, ca_key, cert, key)
    lease = f"kubefence-monitor-{time.time_ns() % 10**9}"
    replicas: list[Replica] = []
    try:
        for name in ("monitor-a", "monitor-b"):
            replicas.append(
                start(tmp_path / name, control_plane.kubeconfig_path, paths, lease, name)
            )
        yield replicas, lease, paths.ca_cert
    finally:
        for replica in replicas:
            replica.stop()


def holder(kube: client.ApiClient, lease: str) -> str:
    found = client.CoordinationV1Api(kube).read_namespaced_lease(lease, OWN_NAMESPACE)
    return str(found.spec.holder_identity or "")


def the_ready(replicas: list[Replica], timeout: float) -> Replica:
    ready: list[Replica] = poll(
        lambda: (found := [r for r in replicas if r.ready()]) and len(found) == 1 and found,
        timeout,
        "single Ready replica",
    )
    return ready[0]


EMPTY_BATCH = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}'


def test_one_ready_monitor_and_the_other_takes_over_when_it_is_killed(
    setup: tuple[list[Replica], str, Path], kube: client.ApiClient
) -> None:
    replicas, lease, ca = setup
    leader = the_ready(replicas, TAKEOVER + SLACK)
    (follower,) = [r for r in replicas if r is not leader]
    assert holder(kube, lease).startswith(f"{leader.name}_")
    status, text = follower.probe("/readyz")
    assert (status, text) == (503, f"not the leader of Lease {OWN_NAMESPACE}/{lease}\n")
    assert "kubefence_monitor_leader 1.0" in leader.probe("/metrics")[1]
    assert "kubefence_monitor_leader 0.0" in follower.probe("/metrics")[1]
    status, answer = follower.post(EMPTY_BATCH, ca)
    assert status == 503
    assert "not the leader" in answer["error"]
    assert leader.post(EMPTY_BATCH, ca) == (200, {})

    leader.process.kill()  # no release: the follower must wait the Lease out
    leader.process.wait(10)
    killed = time.monotonic()
    assert the_ready(replicas, TAKEOVER + SLACK) is follower
    took = time.monotonic() - killed
    print(f"takeover after SIGKILL: {took:.1f}s (bound {TAKEOVER:.1f}s + the probe's poll)")
    assert holder(kube, lease).startswith(f"{follower.name}_")
    assert follower.post(EMPTY_BATCH, ca) == (200, {})


def test_a_stopped_holder_releases_and_the_other_takes_over_at_its_next_retry(
    setup: tuple[list[Replica], str, Path], kube: client.ApiClient
) -> None:
    replicas, lease, _ = setup
    leader = the_ready(replicas, TAKEOVER + SLACK)
    (follower,) = [r for r in replicas if r is not leader]
    leader.stop()  # SIGTERM: drain, then release the Lease
    assert leader.process.returncode == 0, leader.stderr()
    assert the_ready(replicas, RETRY_PERIOD * (1 + JITTER) + SLACK) is follower
    assert holder(kube, lease).startswith(f"{follower.name}_")
