"""`kubefence monitor` over real TLS in-process: sender authentication, answers, alerts, metrics."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from correlate_kit import OPTIONS, WEBHOOK, at, lines, real_decision, real_event
from monitor_kit import Monitor, event_list, running

from webhook.commands.monitor import follow_config
from webhook.correlate.timestamps import format_time
from webhook.monitor.gaps import GapWatch
from webhook.monitor.server import MAX_BODY_BYTES, run_monitor


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[Monitor]:
    async with running(Monitor(tmp_path, mtls=True)) as m:
        yield m


async def test_a_batch_is_counted_once_and_alerted(monitor: Monitor) -> None:
    events = lines("outage.audit.log")
    with structlog.testing.capture_logs() as logs:
        assert (await monitor.post(event_list(events)))[0] == 200
        assert (await monitor.post(event_list(events)))[0] == 200  # sent again: counted once
    bypasses = [e for e in logs if e["event"] == "evasion.bypass"]
    assert {(e["name"], e["cause"]) for e in bypasses} >= {
        ("during-outage", "fail-open"),
        ("dodged", "dodged"),
    }
    assert len(bypasses) == 8
    alert = next(e for e in bypasses if e["name"] == "during-outage")
    assert alert["user"] == "kubefence-admin"
    assert alert["audit_id"] == "3ca541a9-0567-43f2-98b8-a7a8136151cc"
    assert "requestObject" not in alert
    assert "responseObject" not in alert
    text = await monitor.metrics()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kubefence_monitor_audit_events_total{")
    )
    assert total == len(events)
    assert f"kubefence_monitor_duplicate_events_total {float(len(events))}" in text
    assert 'kubefence_monitor_alerts_total{cause="fail-open",kind="evasion.bypass"} 2.0' in text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1"}', "not an audit.k8s.io/v1 EventList"),
        (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}', "not a list"),
    ],
)
async def test_not_an_event_list_is_400_and_the_monitor_goes_on(
    monitor: Monitor, body: bytes, reason: str
) -> None:
    status, answer = await monitor.post(body)
    assert status == 400
    assert reason in orjson.loads(answer)["error"]
    assert answer.count(b"\n") == 1
    assert (await monitor.post(event_list([])))[0] == 200


async def test_over_the_size_limit_is_413(monitor: Monitor) -> None:
    status, answer = await monitor.post(io.BytesIO(b" " * (MAX_BODY_BYTES + 1)))
    assert status == 413
    assert b"exceeds" in answer


async def test_seventeen_padded_events_beside_an_exec_are_taken_and_the_exec_alerted(
    monitor: Monitor,
) -> None:
    # issue 23: 17 requests with a ~1 MiB Audit-ID header (the API server keeps it as it came)
    # and one exec in one batch were answered 413 (over the old 16 MiB), the exec unalerted
    pad = "p" * (1 << 20)
    padded = [
        orjson.dumps(
            {**real_event(b"6dc1e0f3-9c6a-4053-ba1b-5431a20f6659"), "auditID": f"{pad}{i}"}
        )
        for i in range(17)
    ]
    exec_event = {**real_event(b"5d3626c9-f0a2-45a8-915e-1daae15cdb5e"), "auditID": pad}
    exec_event["stage"], exec_event["responseStatus"] = "ResponseComplete", {"code": 101}
    body = event_list([*padded, orjson.dumps(exec_event)])
    assert len(body) > 17 << 20
    with structlog.testing.capture_logs() as logs:
        status, _ = await monitor.post(io.BytesIO(body))
    assert status == 200
    (alert,) = [e for e in logs if e["event"] == "evasion.sensitive_access"]
    assert (alert["verb"], alert["subresource"], alert["name"]) == ("create", "exec", "web")
    assert len(alert["audit_id"]) < 300


async def test_a_sender_without_the_client_certificate_is_refused(monitor: Monitor) -> None:
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await monitor.post(event_list([]), with_cert=False)


async def test_a_token_is_required_with_token_file(tmp_path: Path) -> None:
    m = Monitor(tmp_path, mtls=False, token=b"s3cret")
    stop, started = asyncio.Event(), asyncio.Event()

    def on_start(port: int) -> None:
        m.port = port
        started.set()

    task = asyncio.create_task(run_monitor(m.options, m.runtime, started=on_start, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    try:
        assert (await m.post(event_list([]), with_cert=False))[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await m.post(event_list([]), with_cert=False, headers=wrong))[0] == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await m.post(event_list([]), with_cert=False, headers=right))[0] == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_probing_by_the_authenticated_user_in_one_line(monitor: Monitor) -> None:
    denial = real_event(b"91b078e3-9bf8-45a7-a48e-92073fd413e0")
    events = []
    for i in range(10):
        doc: dict[str, Any] = {**denial, "auditID": f"probe-{i}"}
        doc["impersonatedUser"] = {"username": f"system:serviceaccount:team:sa-{i}"}
        events.append(orjson.dumps(doc))
    with structlog.testing.capture_logs() as logs:
        assert (await monitor.post(event_list(events)))[0] == 200
    (probing,) = [e for e in logs if e["event"] == "evasion.probing"]
    assert probing["user"] == "kubefence-admin"
    assert probing["denials"] == 10


def test_refuses_to_start_unauthenticated(tmp_path: Path) -> None:
    m = Monitor(tmp_path, mtls=False)
    args = ["--cert", str(m.cert), "--key", str(m.key), "--port", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--insecure-allow-unauthenticated" in result.stderr


async def paced(body: bytes, piece: int = 16 << 10) -> AsyncIterator[bytes]:
    """A body as the network delivers it: in pieces, with the loop (and time) between them."""
    for i in range(0, len(body), piece):
        yield body[i : i + piece]
        await asyncio.sleep(0.001)


def many_events(n: int) -> list[bytes]:
    get = real_event(b"6dc1e0f3-9c6a-4053-ba1b-5431a20f6659")
    return [orjson.dumps({**get, "auditID": f"paced-{i:06d}"}) for i in range(n)]


async def events_counted(monitor: Monitor) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in (await monitor.metrics()).splitlines()
        if line.startswith("kubefence_monitor_audit_events_total{")
    )


async def test_a_batch_arriving_in_pieces_is_read_whole_and_counted(monitor: Monitor) -> None:
    events = many_events(1700)
    body = event_list(events)
    assert len(body) > 1 << 20
    status, answer = await monitor.post(paced(body))  # chunked, no Content-Length
    assert (status, answer) == (200, b"{}\n")
    assert await events_counted(monitor) == len(events)


async def test_a_chunked_body_over_the_limit_is_413(monitor: Monitor) -> None:
    status, answer = await monitor.post(paced(b" " * (MAX_BODY_BYTES + 1), 1 << 20))
    assert status == 413
    assert b"exceeds" in answer


async def test_an_event_list_of_too_many_items_is_413_in_one_line(monitor: Monitor) -> None:
    status, answer = await monitor.post(event_list([b"{}"] * 100_001))
    assert status == 413
    assert "more than 100000 items" in orjson.loads(answer)["error"]
    assert (await monitor.post(event_list(many_events(3))))[0] == 200


async def test_a_token_that_is_not_utf8_is_401(tmp_path: Path) -> None:
    m = Monitor(tmp_path, mtls=False, token=b"s3cret")
    stop, started = asyncio.Event(), asyncio.Event()

    def on_start(port: int) -> None:
        m.port = port
        started.set()

    task = asyncio.create_task(run_monitor(m.options, m.runtime, started=on_start, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", m.port, ssl=m.context(with_cert=False)
        )
        writer.write(
            b"POST /audit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_last_event_gauge_is_the_receive_time_not_a_forged_stamp(
    monitor: Monitor,
) -> None:
    future = {**real_event(b"6dc1e0f3"), "auditID": "from-the-future"}
    future["stageTimestamp"] = "2999-01-01T00:00:00.000000Z"
    before = time.time()
    assert (await monitor.post(event_list([orjson.dumps(future)])))[0] == 200
    line = next(
        x
        for x in (await monitor.metrics()).splitlines()
        if x.startswith("kubefence_monitor_last_event_timestamp_seconds ")
    )
    assert before <= float(line.split()[1]) <= time.time()


async def test_a_certificate_of_another_subject_is_refused_with_403(tmp_path: Path) -> None:
    m = Monitor(tmp_path, mtls=True, client_subjects=("kube-apiserver",))
    stop, started = asyncio.Event(), asyncio.Event()

    def on_start(port: int) -> None:
        m.port = port
        started.set()

    task = asyncio.create_task(run_monitor(m.options, m.runtime, started=on_start, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    try:
        events = [orjson.dumps({**real_event(b"6ff153f2"), "auditID": "from-a-kubelet"})]
        with structlog.testing.capture_logs() as logs:
            status, answer = await m.post(event_list(events), client="system:node:worker-1")
        assert status == 403
        assert answer.count(b"\n") == 1
        assert "system:node:worker-1" in orjson.loads(answer)["error"]
        assert not [e for e in logs if e["event"].startswith("evasion.")]
        assert (await m.post(event_list(events)))[0] == 200  # the API server's certificate
        text = await m.metrics()
        assert 'kubefence_monitor_batches_total{code="403"} 1.0' in text
        assert 'kubefence_monitor_batches_total{code="200"} 1.0' in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_changed_config_applies_to_the_events_after_it(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"webhookName: {WEBHOOK}\nexemptions: {{namespaces: [kube-system]}}\n")
    m = Monitor(tmp_path, mtls=True)
    args = argparse.Namespace(config=config, webhook_name=None)
    stop, started = asyncio.Event(), asyncio.Event()

    def on_start(port: int) -> None:
        m.port = port
        started.set()

    dodged = real_event(b"6ff153f2")  # a dodged create in namespace "open"
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            run_monitor(
                m.options, m.runtime, background=[follow_config(args)], started=on_start, stop=stop
            )
        )
        await asyncio.wait_for(started.wait(), 10)
        try:
            assert (await m.post(event_list([orjson.dumps(dodged)])))[0] == 200
            config.write_text(f"webhookName: {WEBHOOK}\nexemptions: {{namespaces: [open]}}\n")
            deadline = time.monotonic() + 30
            while not [e for e in logs if e["event"] == "config.applied"]:
                assert time.monotonic() < deadline, "the changed config was never applied"
                await asyncio.sleep(0.05)
            again = {**dodged, "auditID": "after-the-change"}
            assert (await m.post(event_list([orjson.dumps(again)])))[0] == 200
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    bypasses = [e["audit_id"] for e in logs if e["event"] == "evasion.bypass"]
    assert bypasses == [dodged["auditID"]]  # "open" is exempt after the change


async def _post_decisions(
    m: Monitor, body: bytes, *, client: str = "kubefence-serve"
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=m.context(client=client))
        ) as session,
        session.post(f"https://127.0.0.1:{m.port}/decisions", data=body) as response,
    ):
        return response.status, await response.read()


def _decision_list(*records: dict[str, Any]) -> bytes:
    return orjson.dumps({"kind": "DecisionList", "apiVersion": "kubefence.io/v1", "items": records})


async def test_a_decision_no_event_records_is_alerted_an_audit_gap(tmp_path: Path) -> None:
    m = Monitor(tmp_path, mtls=True, client_subjects=("kube-apiserver",))
    m.runtime.decision_subjects = ("kubefence-serve",)
    m.runtime.feed.gaps = GapWatch(dataclasses.replace(OPTIONS, join_window=5.0))
    t0 = time.time() - 60
    get = real_event(b"6dc1e0f3-9c6a-4053-ba1b-5431a20f6659")
    decision = real_decision(b"00ff48d5-8fa9-4743-a5f4-55f1cc877b4b")
    decision.update(timestamp=format_time(t0 + 1), client="commonName=kube-apiserver")
    async with running(m):
        with structlog.testing.capture_logs() as logs:
            assert (await m.post(event_list([orjson.dumps(at(get, t0))])))[0] == 200
            status, answer = await _post_decisions(m, _decision_list(decision, {"x": 1}))
            assert (status, orjson.loads(answer)) == (200, {"held": 1})
            # the API server's certificate may send batches, not decisions
            assert (await _post_decisions(m, _decision_list(decision), client="kube-apiserver"))[
                0
            ] == 403
            assert (await _post_decisions(m, b"{}"))[0] == 400
            assert (await _post_decisions(m, _decision_list(*[{}] * 1001)))[0] == 413
            assert (await m.post(event_list([orjson.dumps(at(get, t0 + 30))])))[0] == 200
        text = await m.metrics()
    (gap,) = [e for e in logs if e["event"] == "evasion.audit_gap"]
    assert gap["decision_id"] == "00ff48d5-8fa9-4743-a5f4-55f1cc877b4b"
    assert (gap["operation"], gap["subresource"], gap["name"]) == ("CONNECT", "exec", "web")
    assert 'kubefence_monitor_decisions_total{result="held"} 1.0' in text
    assert 'kubefence_monitor_decisions_total{result="malformed"} 1.0' in text
    assert 'kubefence_monitor_alerts_total{cause="no-event",kind="evasion.audit_gap"} 1.0' in text


async def test_decisions_without_a_gap_window_are_404(monitor: Monitor) -> None:
    status, answer = await _post_decisions(monitor, _decision_list())
    assert status == 404
    assert b"--audit-gap-window" in answer
