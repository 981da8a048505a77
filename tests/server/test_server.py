"""The HTTP layer over real TLS on loopback: answers, errors, the decision log line, health and metrics."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web
from objects import BAD_REVIEWS, deny_all, netpol_review, pod_spec, review, workload_review

from webhook import certs, server
from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.netpol import analyse_policy
from webhook.server import Runtime, build_app


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> certs.Paths:
    return certs.ensure_dev_certs(tmp_path_factory.mktemp("certs"))


class Webhook:
    def __init__(self, url: str, session: aiohttp.ClientSession, runtime: Runtime) -> None:
        self.url = url
        self.session = session
        self.runtime = runtime

    async def post(self, body: bytes | dict[str, Any], path: str = "/validate") -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        ) as r:
            return r.status, orjson.loads(await r.read())


@pytest.fixture
async def webhook(tls_files: certs.Paths) -> AsyncIterator[Webhook]:
    view = StaticView(
        [
            namespace_facts("fenced", [analyse_policy(deny_all(namespace="fenced"))]),
            namespace_facts("open"),
        ]
    )
    runtime = Runtime(
        settings=parse_settings("server: {maxBodyBytes: 65536}", "config.yaml", Path()),
        cluster=view,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    runner = web.AppRunner(build_app(runtime), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client_ctx = ssl.create_default_context(cafile=str(tls_files.ca_cert))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as session:
        yield Webhook(f"https://127.0.0.1:{port}", session, runtime)
    await runner.cleanup()


async def test_allowed_and_denied_over_tls(webhook: Webhook) -> None:
    status, allowed = await webhook.post(
        workload_review("Deployment", namespace="fenced", uid="u-1")
    )
    assert status == 200
    assert allowed["response"] == {
        "uid": "u-1",
        "allowed": True,
        "auditAnnotations": {
            "decision": "allow",
            "rules": "",
            "decision-id": "u-1",
            "policy-revision": webhook.runtime.settings.revision,
        },
    }
    status, denied = await webhook.post(workload_review("Deployment", namespace="open", uid="u-2"))
    assert status == 200
    assert denied["response"]["allowed"] is False
    assert denied["response"]["status"]["code"] == 403
    assert 'namespace "open" is not fenced' in denied["response"]["status"]["message"]


async def test_v1beta1_is_answered_in_v1beta1(webhook: Webhook) -> None:
    _, out = await webhook.post(
        workload_review("Pod", namespace="fenced", api_version="admission.k8s.io/v1beta1")
    )
    assert out["apiVersion"] == "admission.k8s.io/v1beta1"


@pytest.mark.parametrize(("raw", "reason"), BAD_REVIEWS)
async def test_malformed_bodies_get_400_with_a_one_line_reason(
    webhook: Webhook, raw: bytes, reason: str
) -> None:
    status, out = await webhook.post(raw)
    assert status == 400
    assert out["error"].startswith(reason)
    # ... and the server goes on serving
    status, _ = await webhook.post(workload_review("Pod", namespace="fenced"))
    assert status == 200


async def test_oversized_body_gets_413(webhook: Webhook) -> None:
    doc = workload_review("Pod", namespace="fenced")
    doc["request"]["object"]["metadata"]["annotations"] = {"big": "x" * 70000}
    status, out = await webhook.post(doc)
    assert status == 413
    assert "maxBodyBytes (65536 bytes)" in out["error"]


async def test_oversized_chunked_body_gets_413(webhook: Webhook) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    async with webhook.session.post(webhook.url + "/validate", data=chunks()) as r:
        assert r.status == 413


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/validate", 405), ("PUT", "/validate", 405), ("POST", "/nope", 404)],
)
async def test_wrong_method_or_path(webhook: Webhook, method: str, path: str, status: int) -> None:
    async with webhook.session.request(method, webhook.url + path) as r:
        assert r.status == status
        assert "error" in orjson.loads(await r.read())


async def test_an_internal_failure_is_a_denial_not_a_500(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(server, "decide", broken)
    status, out = await webhook.post(workload_review("Pod", namespace="fenced"))
    assert status == 200
    assert out["response"]["allowed"] is False
    assert out["response"]["auditAnnotations"]["rules"] == "internal-error"


def finalize_review(*, deleting: bool) -> dict[str, Any]:
    """The namespace controller's finalize call of namespace "open", being deleted or not."""
    objects = []
    for finalizers in (["kubernetes"], []):
        doc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "open", "labels": {"kubernetes.io/metadata.name": "open"}},
            "spec": {"finalizers": finalizers},
        }
        if deleting:
            doc["metadata"]["deletionTimestamp"] = "2026-04-01T00:00:00Z"
            doc["status"] = {"phase": "Terminating"}
        objects.append(doc)
    old, new = objects
    return review(
        "UPDATE",
        ("", "v1", "namespaces"),
        "Namespace",
        namespace="open",
        name="open",
        obj=new,
        old=old,
        sub_resource="finalize",
        user="system:serviceaccount:kube-system:namespace-controller",
    )


@pytest.mark.parametrize("deleting", [True, False])
async def test_an_internal_failure_never_strands_a_terminating_namespace(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch, deleting: bool
) -> None:
    # Denying the finalize call of a namespace being deleted would leave it Terminating for
    # good; nothing can be created in it any more, so letting it through opens nothing.
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(server, "decide", broken)
    with structlog.testing.capture_logs() as logs:
        status, out = await webhook.post(finalize_review(deleting=deleting))
    assert status == 200
    response = out["response"]
    assert response["auditAnnotations"]["rules"] == "internal-error"
    # ... and it is logged as the internal error it is, either way.
    assert [e["log_level"] for e in logs if e["event"] == "admission.internal_error"] == ["error"]
    (line,) = [e for e in logs if e["event"] == "admission.decision"]
    assert line["rules"][0]["id"] == "internal-error"
    if deleting:
        assert response["allowed"] is True
        assert response["auditAnnotations"]["decision"] == "warn"
        assert "internal error" in response["warnings"][0]
        assert line["decision"] == "warn"
    else:
        assert response["allowed"] is False
        assert response["auditAnnotations"]["decision"] == "deny"
        assert line["decision"] == "deny"


async def test_one_decision_log_line_without_object_content(webhook: Webhook) -> None:
    spec = pod_spec(
        containers=[
            {"name": "app", "image": "i", "env": [{"name": "TOKEN", "value": "s3cr3t-value"}]}
        ]
    )
    doc = workload_review("Pod", namespace="open", spec=spec, uid="log-1", dry_run=True)
    with structlog.testing.capture_logs() as logs:
        await webhook.post(doc)
    decisions = [e for e in logs if e["event"] == "admission.decision"]
    assert len(decisions) == 1
    line = decisions[0]
    assert line["decision_id"] == "log-1"
    assert line["decision"] == "deny"
    assert line["allowed"] is False
    assert line["dry_run"] is True
    assert line["kind"] == "/v1/Pod"
    assert line["resource"] == "pods"
    assert line["namespace"] == "open"
    assert line["user"] == "alice"
    assert line["audit_annotations"]["decision-id"] == "log-1"
    assert line["rules"][0]["id"] == "default-deny"
    assert line["rules"][0]["result"] == "fail"
    assert line["latency_ms"] > 0
    assert "s3cr3t-value" not in orjson.dumps(line).decode()


async def test_health_readiness_and_metrics(webhook: Webhook) -> None:
    async with webhook.session.get(webhook.url + "/healthz") as r:
        assert r.status == 200
    async with webhook.session.get(webhook.url + "/readyz") as r:
        assert r.status == 200
    await webhook.post(workload_review("Pod", namespace="open"))
    async with webhook.session.get(webhook.url + "/metrics") as r:
        text = await r.text()
    assert 'kubefence_decisions_total{decision="deny",operation="CREATE"} 1.0' in text
    assert 'kubefence_rule_failures_total{mode="enforce",rule="default-deny"} 1.0' in text
    webhook.runtime.shutting_down = True
    async with webhook.session.get(webhook.url + "/readyz") as r:
        assert r.status == 503
        assert "shutting down" in await r.text()


async def test_no_response_names_the_server_software(webhook: Webhook) -> None:
    """No `Server: Python/3.x aiohttp/3.x` on any answer: allowed, denied, errors, probes."""
    too_big = workload_review("Pod", namespace="fenced")
    too_big["request"]["object"]["metadata"]["annotations"] = {"big": "x" * 70000}
    requests: list[tuple[str, str, bytes | None]] = [
        ("POST", "/validate", orjson.dumps(workload_review("Pod", namespace="fenced"))),
        ("POST", "/validate", orjson.dumps(workload_review("Pod", namespace="open"))),
        ("POST", "/validate", b"not json"),
        ("POST", "/validate", orjson.dumps(too_big)),
        ("GET", "/validate", None),
        ("POST", "/elsewhere", None),
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
    ]
    statuses = []
    for method, path, body in requests:
        async with webhook.session.request(method, webhook.url + path, data=body) as r:
            statuses.append(r.status)
            assert "Server" not in r.headers, (method, path, r.headers.get("Server"))
    assert statuses == [200, 200, 400, 413, 405, 404, 200, 200, 200]


async def test_metrics_have_no_created_series(webhook: Webhook) -> None:
    await webhook.post(workload_review("Pod", namespace="open"))
    async with webhook.session.get(webhook.url + "/metrics") as r:
        text = await r.text()
    assert "kubefence_decisions_total{" in text
    assert "kubefence_admission_duration_seconds_bucket{" in text
    assert "_created" not in text


async def test_a_slow_client_does_not_starve_others(
    webhook: Webhook, tls_files: certs.Paths
) -> None:
    host, port = "127.0.0.1", int(webhook.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(tls_files.ca_cert))
    slow = []
    for _ in range(20):  # connections that send headers and part of a body, then stall
        _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost")
        writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        await writer.drain()
        slow.append(writer)
    for _ in range(20):
        status, _ = await asyncio.wait_for(
            webhook.post(workload_review("Pod", namespace="fenced")), 5
        )
        assert status == 200
    for writer in slow:
        writer.close()


async def test_a_stalled_body_times_out_with_400(
    webhook: Webhook, tls_files: certs.Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "BODY_READ_TIMEOUT", 0.3)
    host, port = "127.0.0.1", int(webhook.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(tls_files.ca_cert))
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost")
    writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 400")
    writer.close()


async def test_malformed_http_is_answered_not_dropped(
    webhook: Webhook, tls_files: certs.Paths
) -> None:
    host, port = "127.0.0.1", int(webhook.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(tls_files.ca_cert))
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost")
    writer.write(b"POST /validate HTTP/1.1\r\nContent-Length: banana\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    assert head.split()[1] == b"400"  # aiohttp answers an unparsable request as HTTP/1.0
    writer.close()


async def test_an_approved_teardown_is_counted_before_the_informer_sees_it(
    webhook: Webhook,
) -> None:
    """Pods created right after the last fence's removal was approved are denied (tombstone)."""
    fence_policy = deny_all(namespace="quiet")
    webhook.runtime.cluster = StaticView(
        [namespace_facts("quiet", [analyse_policy(fence_policy)], running_pods=0)]
    )
    pod = workload_review("Pod", namespace="quiet")
    _, dry = await webhook.post(netpol_review("DELETE", old=fence_policy, dry_run=True))
    assert dry["response"]["allowed"] is True
    _, out = await webhook.post(pod)
    assert out["response"]["allowed"] is True  # a dry run approves nothing
    _, out = await webhook.post(netpol_review("DELETE", old=fence_policy))
    assert out["response"]["allowed"] is True  # teardown: no running Pods
    _, out = await webhook.post(pod)
    assert out["response"]["allowed"] is False
    assert 'namespace "quiet" is not fenced' in out["response"]["status"]["message"]


class _FailingReads:
    """A live source whose reads time out: the fault a stopped API server shows."""

    async def confirm(
        self, namespace: str, timeout: float, *, not_before: float | None = None, caller: str = ""
    ) -> None:
        return None


async def test_a_fence_is_not_let_go_when_the_live_read_fails(webhook: Webhook) -> None:
    older, newer = (
        deny_all("a", "team", "2026-01-01T00:00:00Z"),
        deny_all("b", "team", "2026-02-01T00:00:00Z"),
    )
    webhook.runtime.cluster = StaticView(
        [namespace_facts("team", [analyse_policy(older), analyse_policy(newer)])]
    )
    _, out = await webhook.post(netpol_review("DELETE", old=newer, dry_run=True))
    assert out["response"]["allowed"] is True  # no live source: the view is authoritative
    webhook.runtime.confirmer = _FailingReads()
    _, out = await webhook.post(netpol_review("DELETE", old=newer, dry_run=True))
    assert out["response"]["allowed"] is False
    assert "does not let a fence go on cached state alone" in out["response"]["status"]["message"]
    _, out = await webhook.post(workload_review("Pod", namespace="team"))
    assert out["response"]["allowed"] is True  # an allowed workload needs no live read


class _LiveReads:
    """A live source that returns `fresh`: what the API server holds when the cache lags."""

    def __init__(self, fresh: StaticView) -> None:
        self.fresh = fresh

    async def confirm(
        self, namespace: str, timeout: float, *, not_before: float | None = None, caller: str = ""
    ) -> StaticView:
        return self.fresh


async def test_fence_lost_is_annotated_from_the_decision_on_the_live_read(
    webhook: Webhook,
) -> None:
    older, newer = (
        deny_all("a", "team", "2026-01-01T00:00:00Z"),
        deny_all("b", "team", "2026-02-01T00:00:00Z"),
    )
    # The cache still has the older fence; the API server says it is gone and no Pod runs.
    webhook.runtime.cluster = StaticView(
        [namespace_facts("team", [analyse_policy(older), analyse_policy(newer)])]
    )
    webhook.runtime.confirmer = _LiveReads(
        StaticView([namespace_facts("team", [analyse_policy(newer)], running_pods=0)])
    )
    _, out = await webhook.post(netpol_review("DELETE", old=newer))
    assert out["response"]["allowed"] is True
    assert out["response"]["auditAnnotations"]["fence-lost"] == "Ingress,Egress"
