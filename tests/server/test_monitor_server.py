"""`kubefence monitor` over real TLS in-process: sender authentication, answers, alerts, metrics."""

from __future__ import annotations

import asyncio
import io
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from correlate_kit import lines, real_event
from monitor_kit import Monitor, event_list

from webhook.monitor.server import MAX_BODY_BYTES, run_monitor


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[Monitor]:
    m = Monitor(tmp_path, mtls=True)
    stop = asyncio.Event()
    started = asyncio.Event()

    def on_start(port: int) -> None:
        m.port = port
        started.set()

    task = asyncio.create_task(run_monitor(m.options, m.runtime, started=on_start, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    yield m
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0


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
