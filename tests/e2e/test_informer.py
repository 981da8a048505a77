"""The live cluster view against a real kube-apiserver: fresh, self-healing, fail-closed, least-privilege.

The informer and the live reader run in the test's event loop over a kubeconfig, as `kubefence
serve --kubeconfig` runs them; objects are changed with an admin client in a thread meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, ExternalCluster, free_port
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from objects import deny_all, netpol, parse, workload_review

from webhook.cluster.live import LiveView, NamespaceReader, build
from webhook.cluster.reflector import Backoff
from webhook.cluster.state import Resource
from webhook.cluster.transport import KubeTransport, close, connect
from webhook.cluster.view import NamespaceFacts
from webhook.decide import decide
from webhook.netpol import Direction
from webhook.server import Runtime
from webhook.settings import DEFAULT_SETTINGS, Settings

Cluster = ControlPlane | ExternalCluster
WITHIN = 1.0  # seconds a change may take to reach the view (the issue's bound)
RECOVERY = 60.0  # seconds an informer may take to come back after the API server does
FAST = Backoff(initial=0.1, cap=1.0)


# --- helpers ---------------------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll `check` until it holds; fail after `within` seconds. Returns the time it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within}s: {what}"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def fenced(view: LiveView, namespace: str, direction: Direction = Direction.INGRESS) -> bool:
    facts = view.namespace(namespace)
    return facts is not None and facts.fence(direction, strict=False).fenced


def names(facts: NamespaceFacts | None) -> list[str]:
    return [p.name for p in facts.policies] if facts is not None else []


def pod_verdict(view: Any, namespace: str, settings: Settings = DEFAULT_SETTINGS) -> str:
    return decide(parse(workload_review("Pod", namespace=namespace)), view, settings).verdict


def transitions(runtime: Runtime, event: str, direction: Direction) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "kubefence_fence_transitions_total", {"event": event, "direction": direction.value}
    )
    return value or 0.0


class Admin:
    """The test's own hands on the cluster (sync client, run in a thread to keep the loop free)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.net = client.NetworkingV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def namespace(self, prefix: str = "kf-inf") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        await self(self.core.create_namespace, body)
        return name

    async def policy(self, obj: dict[str, Any]) -> None:
        body = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k == "name"}}
        await self(self.net.create_namespaced_network_policy, obj["metadata"]["namespace"], body)

    async def delete_policy(self, namespace: str, name: str) -> None:
        await self(self.net.delete_namespaced_network_policy, name, namespace)


@pytest.fixture
def admin(kube: client.ApiClient) -> Admin:
    return Admin(kube)


@contextlib.asynccontextmanager
async def running(kubeconfig: Path, settings: Settings = DEFAULT_SETTINGS) -> AsyncIterator[Any]:
    """A LiveView whose informer runs in this loop, synced; yields (view, runtime)."""
    api, _ = await connect(kubeconfig)
    view = build(api, backoff=FAST)  # the tests restart the API server: retry soon
    runtime = Runtime(settings=settings, cluster=view, confirmer=view)
    task = asyncio.create_task(view.informer.run(runtime))
    try:
        await eventually(lambda: view.synced, 30.0, "informer synced")
        yield view, runtime
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await close(api)


@pytest.fixture
async def live(control_plane: Cluster) -> AsyncIterator[Any]:
    async with running(control_plane.kubeconfig_path) as pair:
        yield pair


def local_only(control_plane: Cluster) -> ControlPlane:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the local control plane (it stops and restarts kube-apiserver)")
    return control_plane


@contextlib.contextmanager
def apiserver_back(control_plane: ControlPlane) -> Iterator[None]:
    """Whatever a test does to kube-apiserver, the next test finds it running."""
    try:
        yield
    finally:
        if not control_plane.running:
            control_plane.restart_apiserver()


class Proxy:
    """A TCP relay in front of kube-apiserver that the test can cut: a network partition."""

    def __init__(self, port: int) -> None:
        self.port = 0
        self._target = port
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.partition()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        # Python 3.11's wait_closed does not wait for the relays: wait for them here, so that no
        # socket of theirs outlives the test's event loop.
        await asyncio.gather(*self._relays, return_exceptions=True)

    def partition(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            writer.close()

    def heal(self) -> None:
        self._cut = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._relays.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            await _closed(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            await _closed(writer)
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}
            await asyncio.gather(_closed(writer), _closed(up_writer))

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


async def _closed(writer: asyncio.StreamWriter) -> None:
    """Close a stream and wait until its socket is (a reset peer is closed too)."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def kubeconfig_via(source: Path, target: Path, *, port: int | None = None, token: str = "") -> Path:
    """A copy of a kubeconfig with another port and/or a bearer token instead of its user."""
    doc = yaml.safe_load(source.read_text())
    cluster = doc["clusters"][0]["cluster"]
    if port is not None:
        cluster["server"] = f"https://127.0.0.1:{port}"
    if token:
        doc["users"][0]["user"] = {"token": token}
    target.write_text(yaml.safe_dump(doc))
    return target


# --- freshness -------------------------------------------------------------------------------------


async def test_policy_changes_reach_the_view_and_the_decision_within_a_second(
    live: Any, admin: Admin
) -> None:
    view, runtime = live
    ns = await admin.namespace()
    await eventually(lambda: view.namespace(ns) is not None, WITHIN, "namespace seen")
    assert pod_verdict(view, ns) == "deny"
    lost_before = transitions(runtime, "lost", Direction.INGRESS)

    await admin.policy(deny_all(namespace=ns))
    await eventually(lambda: fenced(view, ns), WITHIN, "created policy seen")
    assert pod_verdict(view, ns) == "allow"

    opened = netpol(namespace=ns, selector={"matchLabels": {"app": "x"}}, types=["Ingress"])
    await admin(
        admin.net.replace_namespaced_network_policy,
        "default-deny",
        ns,
        {**opened, "metadata": {"name": "default-deny", "namespace": ns}},
    )
    await eventually(lambda: not fenced(view, ns), WITHIN, "updated policy seen")
    assert pod_verdict(view, ns) == "deny"
    assert transitions(runtime, "lost", Direction.INGRESS) == lost_before + 1

    await admin.delete_policy(ns, "default-deny")
    await eventually(lambda: names(view.namespace(ns)) == [], WITHIN, "deleted policy seen")
    assert view.staleness() == 0.0


async def test_namespace_labels_and_termination_reach_the_view(live: Any, admin: Admin) -> None:
    view, _ = live
    ns = await admin.namespace()
    await admin(admin.core.patch_namespace, ns, {"metadata": {"labels": {"team": "blue"}}})
    await eventually(
        lambda: (view.namespace(ns) or _empty(ns)).labels.get("team") == "blue",
        WITHIN,
        "label seen",
    )
    await admin(admin.core.delete_namespace, ns)  # no controller-manager: stays Terminating
    await eventually(lambda: (view.namespace(ns) or _empty(ns)).terminating, WITHIN, "terminating")


def _empty(name: str) -> NamespaceFacts:
    return NamespaceFacts(name)


# --- the read-through --------------------------------------------------------------------------------


async def test_confirm_reads_a_namespace_the_cache_does_not_know_yet(
    control_plane: Cluster, admin: Admin
) -> None:
    api, _ = await connect(control_plane.kubeconfig_path)
    try:
        view = build(api)  # its informer never runs: whatever confirm sees, it read live
        ns = await admin.namespace()
        await admin.policy(deny_all(namespace=ns))
        assert view.namespace(ns) is None
        assert pod_verdict(view, ns) == "deny"

        fresh = await view.confirm(ns, 2.0)
        assert fresh is not None
        facts = fresh.namespace(ns)
        assert names(facts) == ["default-deny"]
        assert facts is not None
        assert facts.running_pods == 0
        assert facts.labels["kubernetes.io/metadata.name"] == ns
        assert fresh.staleness() == 0.0
        assert pod_verdict(fresh, ns) == "allow"
        assert fresh.namespace("kube-system") is None  # others come from the (empty) cache

        pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        await admin(admin.core.create_namespaced_pod, ns, pod)  # Pending: may still run
        await asyncio.sleep(1.1)  # past the remembered answer
        again = await view.confirm(ns, 2.0)
        assert again is not None
        facts = again.namespace(ns)
        assert facts is not None
        assert facts.running_pods is not None
        assert facts.running_pods >= 1

        missing = await view.confirm(f"kf-absent-{uuid.uuid4().hex[:6]}", 2.0)
        assert missing is not None  # read fine: a namespace that does not exist has no fence
    finally:
        await close(api)


async def test_concurrent_confirms_share_one_read_and_reuse_it_briefly(
    control_plane: Cluster, admin: Admin
) -> None:
    api, _ = await connect(control_plane.kubeconfig_path)
    try:
        reader = NamespaceReader(KubeTransport(api))
        ns = await admin.namespace()
        results = await asyncio.gather(*(reader.read(ns, 2.0) for _ in range(20)))
        assert reader.reads == 1
        assert all(r is results[0] for r in results)
        await reader.read(ns, 2.0)
        assert reader.reads == 1  # remembered
        await asyncio.sleep(1.1)
        await reader.read(ns, 2.0)
        assert reader.reads == 2
    finally:
        await close(api)


async def test_a_read_before_a_fence_goes_is_never_a_remembered_one(
    control_plane: Cluster, admin: Admin
) -> None:
    api, _ = await connect(control_plane.kubeconfig_path)
    try:
        reader = NamespaceReader(KubeTransport(api))
        ns = await admin.namespace()
        await reader.read(ns, 2.0)
        asked = time.monotonic()
        fresh = await reader.read(ns, 2.0, not_before=asked)
        assert reader.reads == 2  # the remembered answer predates the request
        # Two requests that arrived before one read started share it.
        later = time.monotonic()
        first, shared = await asyncio.gather(
            reader.read(ns, 2.0, not_before=later), reader.read(ns, 2.0, not_before=later)
        )
        assert first is shared
        assert reader.reads == 3
        assert fresh.name == ns
    finally:
        await close(api)


async def test_confirm_fails_closed_when_the_api_server_cannot_answer(
    control_plane: Cluster, tmp_path: Path
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, never answer

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    silent = server.sockets[0].getsockname()[1]
    try:
        for port in (free_port(), silent):  # refused, then never answered
            kubeconfig = kubeconfig_via(control_plane.kubeconfig_path, tmp_path / "kc", port=port)
            api, _ = await connect(kubeconfig)
            try:
                started = time.monotonic()
                assert await build(api).confirm("default", 0.5) is None
                assert time.monotonic() - started < 2.0  # bounded by the caller's timeout
            finally:
                await close(api)
    finally:
        await asyncio.gather(*(_closed(writer) for writer in accepted))
        server.close()
        await server.wait_closed()


# --- outages -----------------------------------------------------------------------------------------


async def test_the_informer_recovers_by_itself_after_an_api_server_restart(
    control_plane: Cluster, live: Any, admin: Admin
) -> None:
    local = local_only(control_plane)
    view, _ = live
    with apiserver_back(local):
        await asyncio.to_thread(local.restart_apiserver)
    ns = await admin.namespace()
    await admin.policy(deny_all(namespace=ns))
    await eventually(lambda: fenced(view, ns), RECOVERY, "a policy created after the restart")
    await eventually(lambda: view.staleness() == 0.0, RECOVERY, "healthy again")
    streams = view.informer.streams
    assert streams[Resource.NETWORK_POLICIES].errors + streams[Resource.NAMESPACES].errors >= 1


async def test_staleness_grows_while_the_api_server_is_down_and_decisions_follow_on_stale(
    control_plane: Cluster, admin: Admin
) -> None:
    local = local_only(control_plane)
    settings = dataclasses.replace(DEFAULT_SETTINGS, max_staleness=0.5)
    async with running(local.kubeconfig_path, settings) as (view, _):
        ns = await admin.namespace()
        await admin.policy(deny_all(namespace=ns))
        await eventually(lambda: fenced(view, ns), WITHIN, "policy seen")
        assert pod_verdict(view, ns, settings) == "allow"
        with apiserver_back(local):
            await asyncio.to_thread(local.stop_apiserver)
            await eventually(lambda: view.staleness() > 0.5, 5.0, "staleness past maxStaleness")
            decision = decide(parse(workload_review("Pod", namespace=ns)), view, settings)
            assert decision.verdict == "deny"
            assert "stale" in decision.message
            assert await view.confirm(ns, 0.5) is None  # nor can a live read save it
            await asyncio.to_thread(local.restart_apiserver)
        await eventually(lambda: view.staleness() == 0.0, RECOVERY, "healthy again")
        assert pod_verdict(view, ns, settings) == "allow"


async def test_an_expired_resource_version_relists_and_the_state_is_right_after(
    control_plane: Cluster, admin: Admin, tmp_path: Path
) -> None:
    local = local_only(control_plane)
    ns, other = await admin.namespace(), await admin.namespace()
    await admin.policy(deny_all(name="a", namespace=ns))
    await admin.policy(deny_all(name="guard", namespace=other))
    async with Proxy(local.port) as proxy:
        kubeconfig = kubeconfig_via(local.kubeconfig_path, tmp_path / "kc", port=proxy.port)
        async with running(kubeconfig) as (view, runtime):
            policies = view.informer.streams[Resource.NETWORK_POLICIES]
            await eventually(lambda: policies.connected and fenced(view, other), 10.0, "watching")
            expired, lists = policies.expired, policies.lists
            lost = transitions(runtime, "lost", Direction.INGRESS)

            proxy.partition()
            await eventually(lambda: not policies.connected, 10.0, "watch cut")
            # Missed while away: a replaced fence, and a fence gone for good.
            await admin.policy(deny_all(name="b", namespace=ns))
            await admin.delete_policy(ns, "a")
            await admin.delete_policy(other, "guard")
            # A fresh watch cache starts after those writes: the informer's version is too old.
            with apiserver_back(local):
                await asyncio.to_thread(local.restart_apiserver)
            proxy.heal()

            await eventually(
                lambda: names(view.namespace(ns)) == ["b"] and not fenced(view, other),
                RECOVERY,
                "the state after the partition",
            )
            assert policies.expired > expired  # a 410 Gone ...
            assert policies.lists > lists  # ... answered by a re-list
            assert fenced(view, ns)
            assert transitions(runtime, "lost", Direction.INGRESS) == lost + 1  # "other" only
            await eventually(lambda: view.staleness() == 0.0, RECOVERY, "healthy again")


# --- least privilege ---------------------------------------------------------------------------------


async def test_the_minimal_role_is_enough_and_no_more(
    control_plane: Cluster, admin: Admin, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    home = await admin.namespace("kf-rbac")
    role = f"kubefence-informer-{suffix}"
    await admin(
        admin.core.create_namespaced_service_account, home, {"metadata": {"name": "kubefence"}}
    )
    rules = [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    await admin(admin.rbac.create_cluster_role, {"metadata": {"name": role}, "rules": rules})
    binding = {
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "kubefence", "namespace": home}],
    }
    await admin(admin.rbac.create_cluster_role_binding, binding)
    try:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        minted = await admin(
            admin.core.create_namespaced_service_account_token, "kubefence", home, request
        )
        kubeconfig = kubeconfig_via(
            control_plane.kubeconfig_path, tmp_path / "kc", token=minted.status.token
        )
        ns = await admin.namespace()
        async with running(kubeconfig) as (view, _):
            await admin.policy(deny_all(namespace=ns))
            await eventually(lambda: fenced(view, ns), 5.0, "policy seen with the minimal role")
            fresh = await view.confirm(ns, 2.0)
            assert fresh is not None
            facts = fresh.namespace(ns)
            assert facts is not None
            assert facts.running_pods == 0

        limited = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            core, net = client.CoreV1Api(limited), client.NetworkingV1Api(limited)
            pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
            forbidden: list[Callable[[], Any]] = [
                lambda: core.create_namespaced_pod(ns, pod),
                lambda: core.read_namespaced_pod("p", ns),
                lambda: net.delete_namespaced_network_policy("default-deny", ns),
                lambda: core.list_namespaced_secret(ns),
            ]
            for attempt in forbidden:
                with pytest.raises(ApiException) as caught:
                    await asyncio.to_thread(attempt)
                assert caught.value.status == 403
        finally:
            limited.close()
    finally:
        await admin(admin.rbac.delete_cluster_role_binding, role)
        await admin(admin.rbac.delete_cluster_role, role)
