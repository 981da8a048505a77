"""`serve --decisions-to` (issue 23 item 6): the webhook's sensitive decisions reach the monitor,
authenticated as the audit feed is, without admission ever waiting for them; what the audit
Policy never records is not sent; a monitor that refuses or is gone costs counted records only."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from correlate_kit import OPTIONS
from monitor_kit import Monitor, running
from objects import review

from webhook.admission import parse_review
from webhook.auditpolicy import load_policy
from webhook.cluster.view import StaticView
from webhook.commands import monitor as monitor_command
from webhook.commands.serve import add_arguments, decision_feed
from webhook.config import parse_settings
from webhook.decisionfeed import QUEUE_SIZE, DecisionFeed, FeedOptions, sensitive, unaudited
from webhook.errors import InputError
from webhook.metrics import Metrics
from webhook.monitor.gaps import GapWatch
from webhook.server import Runtime, build_app

E2E_POLICY = Path(__file__).parents[1] / "e2e" / "audit-policy.yaml"


def exec_review(namespace: str = "fenced", uid: str = "exec-1") -> Any:
    doc = review(
        "CONNECT",
        ("", "v1", "pods"),
        "PodExecOptions",
        namespace=namespace,
        name="web",
        sub_resource="exec",
        uid=uid,
    )
    return parse_review(orjson.dumps(doc))


def fields_of(request: Any, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "decision_id": request.uid,
        "decision": "allow",
        "allowed": True,
        "operation": request.operation,
        "resource": request.resource.resource,
        "subresource": request.sub_resource,
        "namespace": request.namespace,
        "name": request.name,
        "user": request.user.username,
        "dry_run": False,
        "client": "commonName=kube-apiserver",
        "audit_annotations": annotations or {},
        "rules": [{"id": "x", "message": "never sent"}],
    }


def test_what_is_sensitive() -> None:
    assert sensitive(exec_review(), {})
    create = parse_review(
        orjson.dumps(review("CREATE", ("apps", "v1", "deployments"), "Deployment"))
    )
    assert not sensitive(create, {})
    assert sensitive(create, {"fence-lost": "Ingress"})
    delete = review("DELETE", ("networking.k8s.io", "v1", "networkpolicies"), "NetworkPolicy")
    assert sensitive(parse_review(orjson.dumps(delete)), {})
    debug = review(
        "UPDATE", ("", "v1", "pods"), "Pod", name="web", sub_resource="ephemeralcontainers"
    )
    assert sensitive(parse_review(orjson.dumps(debug)), {})


def test_a_request_the_audit_policy_records_at_none_is_no_gap_to_send() -> None:
    policy = load_policy(E2E_POLICY.read_text(), str(E2E_POLICY))
    assert unaudited(exec_review("unaudited"), policy)
    assert not unaudited(exec_review("fenced"), policy)
    assert not unaudited(exec_review("unaudited"), None)


@pytest.mark.parametrize(
    ("omitted", "unrecorded"),
    [("RequestReceived", False), ("ResponseComplete", False), ("ResponseStarted", True)],
)
def test_an_exec_whose_prompt_stage_the_policy_omits_is_not_sent(
    omitted: str, unrecorded: bool
) -> None:
    # a long exec's ResponseComplete comes when it ends: without ResponseStarted its event
    # would come after the window, a gap that is none
    text = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [{omitted}]
rules:
  - level: Metadata
"""
    policy = load_policy(text, "policy.yaml")
    assert unaudited(exec_review(), policy) is unrecorded


async def test_a_sensitive_decision_reaches_the_monitor_and_nothing_else_does(
    tmp_path: Path,
) -> None:
    m = Monitor(tmp_path, mtls=True, token=b"s3cr3t", client_subjects=("kube-apiserver",))
    m.runtime.decision_subjects = ("kubefence-serve",)
    m.runtime.feed.gaps = GapWatch(dataclasses.replace(OPTIONS, join_window=5.0))
    leaf = m.clients.issue_cert("serve.client", common_name="kubefence-serve")
    cert, key = tmp_path / "serve.crt", tmp_path / "serve.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca = tmp_path / "monitor-ca.crt"
    m.ca.cert_pem.write_to_path(str(ca))
    token = tmp_path / "token"
    token.write_bytes(b"s3cr3t\n")
    async with running(m):
        options = FeedOptions(
            targets=(f"https://127.0.0.1:{m.port}/decisions",),
            ca=ca,
            token_file=token,
            client_cert=cert,
            client_key=key,
        )
        metrics = Metrics()
        feed = DecisionFeed(options, registry=metrics.registry, log=structlog.get_logger())
        sender = asyncio.create_task(feed.run())
        try:
            create = parse_review(
                orjson.dumps(review("CREATE", ("apps", "v1", "deployments"), "Deployment"))
            )
            feed.offer(create, fields_of(create))
            feed.offer(exec_review(), fields_of(exec_review()))
            for _ in range(200):
                text = await m.metrics()
                if 'kubefence_monitor_decisions_total{result="held"} 1.0' in text:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(text)
        finally:
            sender.cancel()
    served = metrics.render().decode()
    assert 'result="sent"' in served
    assert "kubefence_decision_feed_records_total" in served
    assert (
        f'kubefence_decision_feed_records_total{{result="sent",target="{options.targets[0]}"}} 1.0'
        in served
    )


async def test_a_full_queue_drops_and_counts_and_a_refusing_monitor_is_logged_once(
    tmp_path: Path,
) -> None:
    m = Monitor(tmp_path, mtls=False, token=b"right")
    m.runtime.feed.gaps = GapWatch(dataclasses.replace(OPTIONS, join_window=5.0))
    ca = tmp_path / "monitor-ca.crt"
    m.ca.cert_pem.write_to_path(str(ca))
    token = tmp_path / "token"
    token.write_bytes(b"wrong")
    async with running(m):
        url = f"https://127.0.0.1:{m.port}/decisions"
        metrics = Metrics()
        feed = DecisionFeed(
            FeedOptions(targets=(url,), ca=ca, token_file=token),
            registry=metrics.registry,
            log=structlog.get_logger(),
        )
        request = exec_review()
        for _ in range(QUEUE_SIZE + 5):  # admission goes on; no sender yet
            feed.offer(request, fields_of(request))
        with structlog.testing.capture_logs() as logs:
            sender = asyncio.create_task(feed.run())
            try:
                for _ in range(400):
                    if not feed.targets[0].queue:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0)
            finally:
                sender.cancel()
    served = metrics.render().decode()
    assert (
        f'kubefence_decision_feed_records_total{{result="queue_full",target="{url}"}} 5.0' in served
    )
    assert 'result="refused"' in served
    refused = [e for e in logs if e["event"] == "decision_feed.refused"]
    assert len(refused) == 1
    assert "401" in refused[0]["reason"]
    assert "wrong" not in orjson.dumps(logs).decode()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--decisions-to", "http://monitor/decisions", "--decisions-token-file", "t"], "https://"),
        (["--decisions-to", "https://monitor/decisions"], "sender authentication"),
        (["--decisions-token-file", "t"], "need --decisions-to"),
        (
            ["--decisions-to", "https://m/decisions", "--decisions-client-cert", "c"],
            "go together",
        ),
        (
            ["--decisions-to", "https://m/decisions", "--decisions-token-file", "missing"],
            "cannot read",
        ),
    ],
)
def test_flags_that_will_not_send_are_refused_in_one_line(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").write_text("token\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--cert", "c", "--key", "k", *argv])
    with pytest.raises(InputError, match=message):
        decision_feed(args)


async def test_serve_tells_the_feed_each_api_server_decision_once_it_is_logged(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webhook import server
    from webhook.peers import ClientIdentity

    runtime = Runtime(settings=parse_settings("", "config.yaml", Path()), cluster=StaticView([]))
    told: list[tuple[str, str]] = []
    runtime.on_decision = lambda request, fields: told.append((request.uid, fields["decision_id"]))
    client = await aiohttp_client(build_app(runtime))

    async def exec_review(uid: str) -> None:
        body = review(
            "CONNECT",
            ("", "v1", "pods"),
            "PodExecOptions",
            name="web",
            sub_resource="exec",
            uid=uid,
        )
        async with client.post("/validate", data=orjson.dumps(body)) as response:
            assert response.status == 200

    # Without a client CA nobody is verified: no decision is sent (the monitor could never call
    # one a gap, and a forger's would take the real ones' places).
    await exec_review("e0")
    assert told == []
    # With one, the pinned API server's are; another certificate the CA signed is not.
    runtime.client_ca, runtime.client_subject = True, "kube-apiserver"
    identity = ClientIdentity("commonName=kube-apiserver", ("kube-apiserver",))
    monkeypatch.setattr(server, "client_identity", lambda request: identity)
    await exec_review("e1")
    kubelet = ClientIdentity("commonName=system:node:worker-1", ("system:node:worker-1",))
    monkeypatch.setattr(server, "client_identity", lambda request: kubelet)
    await exec_review("e2")
    assert told == [("e1", "e1")]


async def _fate(feed: DecisionFeed, metrics: Metrics, url: str, *only: str) -> str:
    """The result the one record offered was counted under, once it was (of `only`, if given)."""
    for _ in range(200):
        for result in only or ("sent", "refused", "failed"):
            line = f'kubefence_decision_feed_records_total{{result="{result}",target="{url}"}} 1.0'
            if line in metrics.render().decode():
                return result
        await asyncio.sleep(0.05)
    raise AssertionError("the record was never sent nor given up")


async def test_the_decisions_port_takes_serve_by_its_token_without_the_api_servers_ca(
    tmp_path: Path,
) -> None:
    # the chart's way: serve has no certificate the API server's CA signed, so the audit port
    # refuses it in the handshake; the decisions port asks for none and wants the token
    m = Monitor(tmp_path, mtls=True)
    token = tmp_path / "decisions-token"
    token.write_bytes(b"decisions-s3cr3t\n")
    m.options = dataclasses.replace(m.options, decisions_port=0, decisions_token_file=token)
    m.runtime.decisions_token = b"decisions-s3cr3t"
    m.runtime.feed.gaps = GapWatch(dataclasses.replace(OPTIONS, join_window=5.0))
    ca = tmp_path / "monitor-ca.crt"
    m.ca.cert_pem.write_to_path(str(ca))
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"nope")
    fates = {}
    async with running(m):
        for name, port, token_file in (
            ("right", m.runtime.decisions_port, token),
            ("wrong", m.runtime.decisions_port, wrong),
            ("audit-port", m.port, token),
        ):
            url = f"https://127.0.0.1:{port}/decisions"
            metrics = Metrics()
            feed = DecisionFeed(
                FeedOptions(targets=(url,), ca=ca, token_file=token_file),
                registry=metrics.registry,
                log=structlog.get_logger(),
            )
            sender = asyncio.create_task(feed.run())
            try:
                feed.offer(exec_review(), fields_of(exec_review(uid=name)))
                fates[name] = await _fate(feed, metrics, url)
            finally:
                sender.cancel()
        text = await m.metrics()
    assert fates == {"right": "sent", "wrong": "refused", "audit-port": "failed"}
    assert 'kubefence_monitor_decisions_total{result="held"} 1.0' in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--decisions-port", "0", "--decisions-token-file", "t"], "needs --audit-gap-window"),
        (["--audit-gap-window", "5", "--decisions-port", "0"], "without sender authentication"),
        (["--decisions-token-file", "t"], "need --decisions-port"),
        (["--audit-gap-window", "0"], "above 0"),
        (
            ["--audit-gap-window", "5", "--decisions-port", "0", "--decisions-token-file", "empty"],
            "empty",
        ),
    ],
)
def test_the_monitor_refuses_decisions_flags_that_would_not_authenticate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    m = Monitor(tmp_path, mtls=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").write_text("token\n")
    (tmp_path / "empty").write_text("\n")
    parser = argparse.ArgumentParser()
    monitor_command.add_arguments(parser)
    args = parser.parse_args(
        [
            "--cert",
            str(m.cert),
            "--key",
            str(m.key),
            "--client-ca",
            str(m.options.client_ca),
            *extra,
        ]
    )
    with pytest.raises(InputError, match=message):
        monitor_command.run(args)


async def test_a_rotated_client_certificate_is_sent_with_from_the_next_post(
    tmp_path: Path,
) -> None:
    m = Monitor(tmp_path, mtls=True)
    m.runtime.decision_subjects = ("kubefence-serve",)
    m.runtime.feed.gaps = GapWatch(dataclasses.replace(OPTIONS, join_window=5.0))
    ca = tmp_path / "monitor-ca.crt"
    m.ca.cert_pem.write_to_path(str(ca))
    cert, key = tmp_path / "serve.crt", tmp_path / "serve.key"

    def issue(name: str) -> None:
        leaf = m.clients.issue_cert(f"{name}.client", common_name=name)
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))

    issue("someone-else")
    async with running(m):
        url = f"https://127.0.0.1:{m.port}/decisions"
        metrics = Metrics()
        feed = DecisionFeed(
            FeedOptions(targets=(url,), ca=ca, client_cert=cert, client_key=key),
            registry=metrics.registry,
            log=structlog.get_logger(),
        )
        sender = asyncio.create_task(feed.run())
        try:
            feed.offer(exec_review(), fields_of(exec_review(uid="before")))
            assert await _fate(feed, metrics, url) == "refused"  # 403: not a --decisions-subject
            issue("kubefence-serve")
            feed.offer(exec_review(), fields_of(exec_review(uid="after")))
            assert await _fate(feed, metrics, url, "sent") == "sent"
        finally:
            sender.cancel()


@pytest.mark.parametrize("client_ca", [False, True])
async def test_serve_says_at_start_that_without_a_client_ca_no_decision_is_sent(
    tmp_path: Path, client_ca: bool
) -> None:
    token = tmp_path / "t"
    token.write_text("token\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--cert", "c", "--key", "k", "--decisions-to", "https://127.0.0.1:1/decisions"]
    argv += ["--decisions-token-file", str(token)]
    job = decision_feed(parser.parse_args(argv))
    assert job is not None
    runtime = Runtime(settings=parse_settings("", "config.yaml", Path()), cluster=StaticView([]))
    runtime.client_ca = client_ca
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(job(runtime))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    warned = [e for e in logs if e["event"] == "decisions_to.unverified"]
    assert bool(warned) is not client_ca
    if warned:
        assert warned[0]["log_level"] == "warning"
        assert "--client-ca" in warned[0]["reason"]
