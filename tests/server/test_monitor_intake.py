"""`kubefence monitor`'s intake over real TLS: slow senders cannot starve the API server's
batches, refusals are logged and counted, a batch re-sent late is skipped whole."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from correlate_kit import lines
from monitor_kit import Monitor, event_list, running

from webhook.monitor import feed as feed_module
from webhook.monitor import intake


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[Monitor]:
    async with running(Monitor(tmp_path, mtls=True)) as m:
        yield m


async def _trickle(m: Monitor, done: asyncio.Event) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", m.port, ssl=m.context())
    try:
        writer.write(b"POST /audit HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        await writer.drain()
        while not done.is_set() and not reader.at_eof():
            writer.write(b" ")
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.read(200), 0.2)
            except TimeoutError:
                continue
        return b""
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def test_senders_trickling_bytes_do_not_hold_back_a_batch(monitor: Monitor) -> None:
    done = asyncio.Event()
    slow = [asyncio.create_task(_trickle(monitor, done)) for _ in range(4)]
    try:
        async with asyncio.timeout(10):  # the trickling senders are being read first
            while monitor.runtime.budget.held < 4:
                await asyncio.sleep(0.01)
        status, _ = await asyncio.wait_for(monitor.post(event_list(lines("outage.audit.log"))), 10)
        assert status == 200
    finally:
        done.set()
        await asyncio.gather(*slow, return_exceptions=True)


async def _declare(m: Monitor, length: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", m.port, ssl=m.context())
    try:
        writer.write(b"POST /audit HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{" % length)
        await writer.drain()
        await reader.read(200)  # the answer (408) or the connection closed
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def test_senders_declaring_the_largest_body_and_sending_none_do_not_hold_back_a_batch(
    monitor: Monitor,
) -> None:
    # two declared 16 MiB bodies would take the whole budget were it taken on the declaration
    idle = [asyncio.create_task(_declare(monitor, intake.MAX_BODY_BYTES)) for _ in range(2)]
    try:
        async with asyncio.timeout(10):  # both are being read
            while monitor.runtime.budget.held < 2:
                await asyncio.sleep(0.01)
        status, _ = await asyncio.wait_for(monitor.post(event_list(lines("outage.audit.log"))), 10)
        assert status == 200
    finally:
        for task in idle:
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)


async def test_a_sender_slower_than_the_minimum_rate_is_cut_off(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "READ_GRACE_SECONDS", 0.2)
    with structlog.testing.capture_logs() as logs:
        answer = await asyncio.wait_for(_trickle(monitor, asyncio.Event()), 10)
    assert answer.startswith(b"HTTP/1.1 408")
    rejected = [e for e in logs if e["event"] == "monitor.batch_rejected"]
    assert [e["code"] for e in rejected] == [408]


async def test_a_body_past_the_budget_is_deferred_with_retry_after(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor.runtime.budget.held = monitor.runtime.budget.limit  # other bodies hold it all
    try:
        status, body = await monitor.post(event_list(lines("outage.audit.log")))
    finally:
        monitor.runtime.budget.held = 0
    assert status == 503
    assert b"as many batch bodies" in body


async def test_every_refused_body_is_logged_with_its_code_never_its_content(
    monitor: Monitor,
) -> None:
    with structlog.testing.capture_logs() as logs:
        assert (await monitor.post(b'{"secret-value": 1}'))[0] == 400
        assert (await monitor.post(event_list([b"{}"] * 100_001)))[0] == 413
    rejected = [e for e in logs if e["event"] == "monitor.batch_rejected"]
    assert [e["code"] for e in rejected] == [400, 413]
    assert rejected[0]["size"] == len(b'{"secret-value": 1}')
    assert all("secret-value" not in str(e) for e in rejected)
    text = await monitor.metrics()
    assert 'kubefence_monitor_batches_total{code="400"} 1.0' in text


async def test_a_batch_re_sent_after_the_event_window_is_counted_once(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "MAX_SEEN", 2)  # later events push the first out
    events = lines("outage.audit.log")
    first = event_list(events)
    assert (await monitor.post(first))[0] == 200
    assert (await monitor.post(event_list(events[::-1])))[0] == 200  # other bytes: per event
    later = monitor.runtime.received
    duplicates = monitor.runtime.metrics.duplicates._value.get()
    assert (await monitor.post(first))[0] == 200  # the API server's late re-send
    assert monitor.runtime.received == later  # nothing counted twice
    assert monitor.runtime.metrics.duplicates._value.get() == duplicates + len(events)


async def test_a_sender_without_a_certificate_is_counted(monitor: Monitor) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        await monitor.post(event_list([]), with_cert=False)
    text = await monitor.metrics()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("kubefence_monitor_tls_handshake_failures_total")
        and 'kind="no_client_certificate"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
