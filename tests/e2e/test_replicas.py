"""Two kubefence replicas behind one address, against the real API server: one notifier per
cluster, a follower that takes over when the leader dies, and the cross-replica window between a
fence's removal on one replica and a workload create on the other, measured and detected.

The two `serve` processes share one certificate and sit behind a round-robin TCP proxy on
loopback, so the API server's connections alternate between them as a Service's would. They
elect a notifier on a Lease in kubefence's namespace (`--leader-election-namespace`). Every wait
polls for its condition with a deadline; the only sleep spreads the racing requests' start.
"""

from __future__ import annotations

import collections
import http.client
import itertools
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from controlplane import ControlPlane, ExternalCluster, free_port
from kubefence_process import (
    AUDIT_POLICY,
    OWN_NAMESPACE,
    WEBHOOK_NAME,
    RunningWebhook,
    wait_for_webhook,
    webhook_configuration,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from webhook import certs

CONFIGURATION = "kubefence-replicas-e2e"
LEASE_DURATION, RETRY_PERIOD, JITTER = 15.0, 2.0, 1.2  # the elector's defaults (client-go's)
TAKEOVER = LEASE_DURATION + RETRY_PERIOD * (1 + JITTER)  # the latest a follower may take over
WAIT = 20.0
RACES = int(os.environ.get("KUBEFENCE_REPLICA_RACES", "40"))
_names = itertools.count()


# --- a Service on loopback ---------------------------------------------------------------------


class RoundRobinProxy:
    """Each accepted TCP connection goes to the next live backend, bytes copied both ways."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self.chosen: list[int] = []  # the backend port of each connection, in order
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        turn = itertools.count()
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            backend = self.backends[next(turn) % len(self.backends)]
            self.chosen.append(backend)
            try:
                upstream = socket.create_connection(("127.0.0.1", backend), timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            self._sockets += [downstream, upstream]
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._sockets:
            sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# --- two replicas --------------------------------------------------------------------------------


@dataclass
class Replicas:
    hooks: list[RunningWebhook]
    proxy: RoundRobinProxy
    lease: str

    def leaders(self) -> list[RunningWebhook]:
        """The replicas whose last election line says they hold the Lease."""
        found = []
        for hook in self.hooks:
            if hook.returncode is not None:
                continue
            states = [
                line["event"]
                for line in _lines(hook)
                if line.get("event") in ("leader.acquired", "leader.lost", "leader.released")
            ]
            if states and states[-1] == "leader.acquired":
                found.append(hook)
        return found

    def the_leader(self) -> RunningWebhook:
        leaders = poll(lambda: (found := self.leaders()) and len(found) == 1 and found)
        return leaders[0]

    def fence_lost(self, namespace: str) -> list[tuple[RunningWebhook, dict[str, Any]]]:
        """Every replica's fence.lost lines for the namespace, once both directions have one."""
        found = [
            (hook, line)
            for hook in self.hooks
            for line in hook.events("fence.lost")
            if line["namespace"] == namespace
        ]
        directions = {line["direction"] for _, line in found}
        return found if directions == {"Ingress", "Egress"} else []


def _lines(hook: RunningWebhook) -> list[dict[str, Any]]:
    out = []
    for raw in hook.decision_log.read_bytes().splitlines():
        try:
            out.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return out


def poll(condition: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout}s")


def start_replica(
    work: Path,
    kubeconfig: Path,
    paths: certs.Paths,
    lease: str,
    index: int,
    *,
    namespace: str = OWN_NAMESPACE,
) -> RunningWebhook:
    work.mkdir(parents=True, exist_ok=True)
    config_file = work / "config.yaml"
    config_file.write_text(
        f"webhookName: {WEBHOOK_NAME}\nauditScope:\n  policyFile: {AUDIT_POLICY.resolve()}\n"
    )
    port = free_port()
    log = work / "decisions.log"
    args = [
        sys.executable, "-m", "webhook", "serve",
        "--kubeconfig", str(kubeconfig),
        "--cert", str(paths.cert), "--key", str(paths.key),
        "--config", str(config_file),
        "--host", "127.0.0.1", "--port", str(port),
        "--drain-seconds", "0",
        "--leader-election-namespace", namespace,
        "--leader-election-id", lease,
    ]  # fmt: skip
    env = {**os.environ, "POD_NAME": f"replica-{index}"}
    with log.open("wb") as out, (work / "stderr.log").open("wb") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, env=env)
    hook = RunningWebhook(work, port, paths.ca_cert.read_bytes(), process, config_file, log)
    hook.wait_ready()
    return hook


@pytest.fixture
def replicas(
    control_plane: ControlPlane | ExternalCluster, kube: client.ApiClient, tmp_path: Path
) -> Iterator[Replicas]:
    if not getattr(control_plane, "local", False):
        pytest.skip("the replicas run on loopback: local control plane only")
    core = client.CoreV1Api(kube)
    try:
        core.create_namespace({"metadata": {"name": OWN_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(tmp_path / "certs", ca_cert, ca_key, cert, key)
    lease = f"kubefence-replicas-{time.time_ns() % 10**9}"
    hooks: list[RunningWebhook] = []
    proxy: RoundRobinProxy | None = None
    admission = client.AdmissionregistrationV1Api(kube)
    try:
        for i in range(2):
            hooks.append(
                start_replica(
                    tmp_path / f"replica-{i}", control_plane.kubeconfig_path, paths, lease, i
                )
            )
        proxy = RoundRobinProxy([h.port for h in hooks])
        admission.create_validating_webhook_configuration(
            webhook_configuration(
                CONFIGURATION,
                WEBHOOK_NAME,
                f"https://127.0.0.1:{proxy.port}/validate",
                paths.ca_cert.read_bytes(),
            )
        )
        wait_for_webhook(kube)
        yield Replicas(hooks, proxy, lease)
    finally:
        try:
            admission.delete_validating_webhook_configuration(CONFIGURATION)
        except ApiException as exc:
            if exc.status != 404:
                raise
        if proxy is not None:
            proxy.close()
        for hook in hooks:
            hook.stop()


# --- helpers -------------------------------------------------------------------------------------


def new_namespace(kube: client.ApiClient) -> str:
    name = f"replicas-{time.time_ns() % 10**8}-{next(_names)}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


def fence(kube: client.ApiClient, namespace: str) -> None:
    client.NetworkingV1Api(kube).create_namespaced_network_policy(
        namespace,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    )


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]},
    }


class Direct:
    """Reviews sent straight to one replica (not through the API server), on one keep-alive
    connection: what that replica would decide for a Pod create in a namespace right now."""

    def __init__(self, hook: RunningWebhook) -> None:
        context = ssl.create_default_context(cadata=hook.ca_pem.decode())
        self._conn = http.client.HTTPSConnection("127.0.0.1", hook.port, context=context)
        self._uids = itertools.count()

    def allows_a_pod(self, namespace: str) -> bool:
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"direct-{next(self._uids)}",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "probe", "groups": ["system:authenticated"]},
                "object": {**pod("probe"), "metadata": {"name": "probe", "namespace": namespace}},
                "dryRun": True,
            },
        }
        self._conn.request(
            "POST", "/validate", orjson.dumps(body), {"Content-Type": "application/json"}
        )
        answer = orjson.loads(self._conn.getresponse().read())
        return bool(answer["response"]["allowed"])

    def close(self) -> None:
        self._conn.close()


def synced_fenced(replicas: Replicas, directs: list[Direct], namespace: str) -> None:
    for direct in directs:
        poll(lambda d=direct: d.allows_a_pod(namespace), what=f"{namespace} fenced on a replica")


# --- one notifier ----------------------------------------------------------------------------------


def test_fence_lost_appears_once_across_two_replicas_and_names_the_workload(
    replicas: Replicas, kube: client.ApiClient
) -> None:
    leader = replicas.the_leader()
    follower = next(h for h in replicas.hooks if h is not leader)
    directs = [Direct(h) for h in replicas.hooks]
    try:
        namespace = new_namespace(kube)
        fence(kube, namespace)
        synced_fenced(replicas, directs, namespace)
        # A Deployment makes no Pod here (no controller manager): the teardown check passes.
        client.AppsV1Api(kube).create_namespaced_deployment(
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod("x")["spec"]},
                },
            },
        )
        client.NetworkingV1Api(kube).delete_namespaced_network_policy("default-deny", namespace)
        # Both replicas have seen the fence go once neither would let a Pod in any more.
        for direct in directs:
            poll(lambda d=direct: not d.allows_a_pod(namespace), what="the fence gone")
        found = poll(lambda: replicas.fence_lost(namespace), what="fence.lost")
    finally:
        for direct in directs:
            direct.close()
    # One line per direction the namespace lost, each once, from the leader only.
    assert sorted(line["direction"] for _, line in found) == ["Egress", "Ingress"]
    assert {hook.port for hook, _ in found} == {leader.port}
    assert [line["workloads"] for _, line in found] == [["Deployment/web"]] * 2
    assert not follower.events("fence.lost")
    assert "kubefence_leader 1.0" in _metrics(leader)
    assert "kubefence_leader 0.0" in _metrics(follower)


def _metrics(hook: RunningWebhook) -> str:
    context = ssl.create_default_context(cadata=hook.ca_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", hook.port, context=context)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_a_follower_takes_over_when_the_leader_is_killed(
    replicas: Replicas, kube: client.ApiClient
) -> None:
    leader = replicas.the_leader()
    follower = next(h for h in replicas.hooks if h is not leader)
    killed = time.monotonic()
    leader.process.send_signal(signal.SIGKILL)  # no release: the Lease must expire
    leader.process.wait()
    replicas.proxy.backends = [follower.port]  # the Service drops the dead endpoint
    poll(lambda: replicas.leaders() == [follower], timeout=TAKEOVER + 5, what="a takeover")
    took = time.monotonic() - killed
    print(f"\ntakeover {took:.1f}s after SIGKILL (lease {LEASE_DURATION:.0f}s)", file=sys.stderr)
    direct = Direct(follower)
    try:
        namespace = new_namespace(kube)
        fence(kube, namespace)
        poll(lambda: direct.allows_a_pod(namespace), what="fenced")
        client.NetworkingV1Api(kube).delete_namespaced_network_policy("default-deny", namespace)
        poll(lambda: not direct.allows_a_pod(namespace), what="the fence gone")
        found = poll(lambda: replicas.fence_lost(namespace), what="fence.lost")
    finally:
        direct.close()
    assert sorted(line["direction"] for _, line in found) == ["Egress", "Ingress"]
    assert {hook.port for hook, _ in found} == {follower.port}
    assert [line["workloads"] for _, line in found] == [[], []]


def test_a_replica_refused_its_lease_warns_once_and_notifies_by_itself(
    control_plane: ControlPlane | ExternalCluster, kube: client.ApiClient, tmp_path: Path
) -> None:
    """A Lease the API server refuses (here its namespace does not exist; a missing Role is a
    403, handled alike): duplicates rather than silence, and the reason said once."""
    if not getattr(control_plane, "local", False):
        pytest.skip("the replica runs on loopback: local control plane only")
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(tmp_path / "certs", ca_cert, ca_key, cert, key)
    missing = f"no-such-namespace-{time.time_ns() % 10**8}"
    hook = start_replica(
        tmp_path / "refused",
        control_plane.kubeconfig_path,
        paths,
        "kubefence-refused",
        0,
        namespace=missing,
    )
    direct = Direct(hook)
    try:
        poll(lambda: hook.events("leader.acquired"), what="leading while refused")
        namespace = new_namespace(kube)
        fence(kube, namespace)
        poll(lambda: direct.allows_a_pod(namespace), what="fenced")
        client.NetworkingV1Api(kube).delete_namespaced_network_policy("default-deny", namespace)
        lost = poll(
            lambda: (
                (found := [e for e in hook.events("fence.lost") if e["namespace"] == namespace])
                and len(found) == 2
                and found
            ),
            what="fence.lost",
        )
        metrics = _metrics(hook)
    finally:
        direct.close()
        hook.stop()
    assert sorted(line["direction"] for line in lost) == ["Egress", "Ingress"]
    refused = hook.events("leader.lease_refused")
    assert len(refused) == 1  # once per change, not once per attempt
    assert refused[0]["level"] == "warning"
    assert f"Lease {missing}/kubefence-refused" in refused[0]["reason"]
    assert f'namespaces "{missing}" not found' in refused[0]["reason"]
    assert "kubefence_leader 1.0" in metrics


# --- the cross-replica window ---------------------------------------------------------------------


@dataclass
class Race:
    namespace: str
    offset: float  # the create was sent this long after the delete (negative: before)
    deleted: bool
    created: bool
    delete_decided_by: int | None
    create_decided_by: int | None
    create_after_delete_answered: float  # create sent minus delete answered, seconds
    lag: list[float | None]  # per replica: delete answered -> it first denies a Pod there


def race_once(replicas: Replicas, clients: list[client.ApiClient], directs: list[Direct]) -> Race:
    namespace = new_namespace(clients[0])
    fence(clients[0], namespace)
    synced_fenced(replicas, directs, namespace)
    offset = random.uniform(-0.03, 0.2)  # spread, not cryptography
    barrier = threading.Barrier(2)
    times: dict[str, float] = {}
    outcome: dict[str, bool] = {}
    errors: list[ApiException] = []

    def delete() -> None:
        barrier.wait()
        if offset < 0:
            time.sleep(-offset)
        try:
            client.NetworkingV1Api(clients[0]).delete_namespaced_network_policy(
                "default-deny", namespace
            )
            outcome["delete"] = True
        except ApiException as exc:
            outcome["delete"] = False
            errors.append(exc)
        times["delete_answered"] = time.monotonic()

    def create() -> None:
        barrier.wait()
        if offset > 0:
            time.sleep(offset)
        times["create_sent"] = time.monotonic()
        try:
            client.CoreV1Api(clients[1]).create_namespaced_pod(namespace, pod("racer"))
            outcome["create"] = True
        except ApiException as exc:
            outcome["create"] = False
            errors.append(exc)

    stop = threading.Event()
    denied_at: list[float | None] = [None] * len(directs)

    def watch(i: int) -> None:
        """When replica i first denies a Pod there: the end of its part of the window."""
        while not stop.is_set():
            if not directs[i].allows_a_pod(namespace):
                denied_at[i] = time.monotonic()
                return
            stop.wait(0.002)  # spacing, so the probes do not starve the replicas' informers

    watchers = [threading.Thread(target=watch, args=(i,)) for i in range(len(directs))]
    threads = [threading.Thread(target=delete), threading.Thread(target=create)]
    for thread in watchers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    if outcome["delete"]:
        for thread in watchers:
            thread.join(WAIT)
    stop.set()
    for thread in watchers:
        thread.join()
    assert all(exc.status == 403 for exc in errors), [exc.body for exc in errors]
    if outcome["delete"]:
        assert None not in denied_at, "a replica never saw the fence go"
    lag = [None if at is None else at - times["delete_answered"] for at in denied_at]
    return Race(
        namespace,
        offset,
        outcome["delete"],
        outcome["create"],
        decided_by(replicas, namespace, "DELETE"),
        decided_by(replicas, namespace, "CREATE", "racer"),
        times["create_sent"] - times["delete_answered"],
        lag,
    )


def decided_by(replicas: Replicas, namespace: str, operation: str, name: str = "") -> int | None:
    for i, hook in enumerate(replicas.hooks):
        for line in hook.decisions():
            if (
                line["namespace"] == namespace
                and line["operation"] == operation
                and not line["dry_run"]
                and (not name or line["name"] == name)
            ):
                return i
    return None


def test_the_cross_replica_window_is_measured_and_each_workload_in_it_is_named(
    replicas: Replicas, control_plane: ControlPlane
) -> None:
    """Race a Pod create against the teardown of the namespace's last fence, through both
    replicas, RACES times; print how often both passed and the window; every Pod that got in
    while its fence went is named by the cluster's one fence.lost for that namespace."""
    clients = [
        config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
        for _ in range(2)
    ]
    directs = [Direct(h) for h in replicas.hooks]
    replicas.the_leader()
    try:
        races = [race_once(replicas, clients, directs) for _ in range(RACES)]
        both = [r for r in races if r.deleted and r.created]
        for r in both:
            found = poll(lambda r=r: replicas.fence_lost(r.namespace), what="fence.lost")
            assert len(found) == 2, found  # Ingress and Egress, once each, by one replica
            assert len({hook.port for hook, _ in found}) == 1, found
            assert all("Pod/racer" in line["workloads"] for _, line in found), found
    finally:
        for direct in directs:
            direct.close()
        for api in clients:
            api.close()
    report(races, both)
    for r in races:
        if r.deleted:  # every removal: one fence.lost for the cluster, never two
            assert len(poll(lambda r=r: replicas.fence_lost(r.namespace))) == 2


def report(races: list[Race], both: list[Race]) -> None:
    def ms(values: list[float]) -> str:
        if not values:
            return "-"
        values = sorted(values)
        return (
            f"median {statistics.median(values) * 1000:.1f} ms,"
            f" max {values[-1] * 1000:.1f} ms (n={len(values)})"
        )

    other_lag = [
        r.lag[1 - r.delete_decided_by]
        for r in races
        if r.deleted and r.delete_decided_by is not None
    ]
    own_lag = [
        r.lag[r.delete_decided_by] for r in races if r.deleted and r.delete_decided_by is not None
    ]
    split = [r for r in both if r.delete_decided_by != r.create_decided_by]
    routes = collections.Counter(
        (r.delete_decided_by, r.create_decided_by) for r in races if r.deleted
    )
    lines = [
        f"cross-replica races: {len(races)}; both passed: {len(both)}"
        f" ({len(split)} decided by different replicas)",
        f"  deletes approved {sum(r.deleted for r in races)}, creates admitted {sum(r.created for r in races)}",
        f"  create sent after the delete's answer, among both-passed: {ms([r.create_after_delete_answered for r in both])}",
        f"  the other replica still admits a Pod after the delete's answer: {ms([x for x in other_lag if x is not None])}",
        f"  the deciding replica: {ms([x for x in own_lag if x is not None])}",
        f"  (replica deciding the approved delete, the create): {dict(routes)}",
    ]
    print("\n" + "\n".join(lines), file=sys.stderr)
