"""The monitor's canary against a real feed that is cut and restored (issue 18: "the canary alerts
when the feed is cut").

This module starts its own control plane, whose audit webhook backend (mTLS, batches every 1 s)
dials a loopback TCP relay in front of `kubefence monitor --canary`. The relay passes TLS through
untouched, so the API server and the monitor authenticate each other end to end; cutting it resets
every open connection and every new one, as a monitor gone from its address would (a black hole
would only add each try's 30 s timeout), and the API server holds the batches it could not send
for its retries. The story, each step a condition polled with a
deadline derived from the monitor's and the API server's own timings:

1. fed: the canaries come back (the last-seen gauge advances) and nothing is alerted;
2. cut: `evasion.feed_silent` (`canary-missing`) for a canary that was audited;
3. restored: a canary comes back, the API server's retries deliver the held batches (every event
   of the file backend reaches the monitor) and nothing more is alerted while fed, although each
   held batch is retried on its own schedule and the held canaries come back out of order;
4. cut again: a second alert, so the first was cleared when the feed came back. The monitor logs
   nothing when the feed resumes: `once until one comes back` is its only "resolved", seen here
   and as the last-seen gauge moving again (what a Prometheus rule on it resolves by).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from controlplane import ADMIN_USER, ControlPlane, missing_binaries, read_audit_log
from kubernetes import client, config
from monitor_process import Monitor, audit_feed, eventually

from webhook.correlate.detect import FEED_SILENT
from webhook.monitor.canary import CANARY_AGENT
from webhook.monitor.canary import TIMEOUT as CANARY_REQUEST_TIMEOUT
from webhook.monitor.server import CHECK_INTERVAL

T = TypeVar("T")

CANARY = 3.0  # --canary SECONDS: above the API server's 1 s batch wait, as the README asks
OVERDUE = 2 * CANARY  # the CanaryWatch timeout `kubefence monitor --canary` sets
SLACK = 10.0  # process scheduling and request times on a loaded 2-core machine
# After a cut, the first canary answered comes at most one period and one request later; it is
# overdue OVERDUE after that and found at the next check.
CUT_DEADLINE = CANARY + CANARY_REQUEST_TIMEOUT + OVERDUE + CHECK_INTERVAL + SLACK
# The webhook backend's five tries of a batch, at most 20 % late each (k8s.io/apiserver@v0.37.2
# pkg/util/webhook/webhook.go, DefaultRetryBackoffWithInitialDelay: 10 s, factor 1.5, jitter 0.2):
# a batch first refused during the cut is sent again within this, if the cut is shorter than
# the 81 s of tries without jitter (CUT_DEADLINE is), after which it would be dropped.
RETRY_HORIZON = (10 + 15 + 22.5 + 33.75) * 1.2
QUIET_RETURNS = 5  # canaries back while fed: four canary periods at least
LAST_SEEN = "kubefence_monitor_canary_last_seen_timestamp_seconds"
CANARY_CONFIGMAP = ("default", "kubefence-monitor-canary")


class Relay:
    """A loopback TCP relay to `target_port`, which the test can cut and restore.

    Forwarding, each accepted connection is piped to the target byte for byte. `cut()` resets
    (RST) every open connection and, until `restore()`, every new one as soon as it is accepted:
    the sender's send fails at once, as with a refused connection, rather than hanging for its
    30 s try timeout. Both return once in force. An asyncio loop runs it in a thread of its own.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forwarding = True
        self.forwarded = 0  # connections piped to the target
        self.refused = 0  # connections reset because the relay was cut
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def cut(self) -> None:
        self._run(self._switch(forwarding=False))

    def restore(self) -> None:
        self._run(self._switch(forwarding=True))

    async def _switch(self, *, forwarding: bool) -> None:
        self.forwarding = forwarding
        if not forwarding:
            for writer in list(self._open):
                _reset(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.forwarding:
            self.refused += 1
            _reset(writer)
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:  # the monitor is not listening yet: the API server tries again later
            _reset(writer)
            return
        try:
            if not self.forwarding:  # cut while connecting
                self.refused += 1
                _reset(writer)
                _reset(target_writer)
                return
            self.forwarded += 1
            self._open |= {writer, target_writer}
            pipes = [
                asyncio.create_task(_pipe(reader, target_writer)),
                asyncio.create_task(_pipe(target_reader, writer)),
            ]
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._open -= {writer, target_writer}
            target_writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()
            for writer in list(self._open):
                _reset(writer)
            await asyncio.gather(*self._handlers, return_exceptions=True)

        self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), the way a refused or broken path looks to the sender."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):  # a reset, either side
        while data := await source.read(1 << 16):
            sink.write(data)
            await sink.drain()


@dataclass
class Fed:
    cp: ControlPlane
    relay: Relay
    monitor: Monitor


@pytest.fixture
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    if missing_binaries():
        pytest.skip("no local control plane binaries")
    work = tmp_path_factory.mktemp("monitor-canary")
    feed = audit_feed(work)
    relay = Relay(feed.port)
    cp: ControlPlane | None = None
    monitor: Monitor | None = None
    try:
        feed.send_to(relay.port)
        cp = ControlPlane(work_dir=work / "cp", extra_apiserver_args=feed.apiserver_args())
        cp.start()
        kube = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
        try:
            namespace, name = CANARY_CONFIGMAP
            client.CoreV1Api(kube).create_namespaced_config_map(
                namespace, {"metadata": {"name": name}}
            )
        finally:
            kube.close()
        monitor = feed.monitor(
            [
                "--canary", str(CANARY), "--canary-configmap", "/".join(CANARY_CONFIGMAP),
                "--kubeconfig", str(cp.kubeconfig_path),
            ],
        )  # fmt: skip
        monitor.start()
        yield Fed(cp, relay, monitor)
    finally:
        if monitor is not None:
            monitor.stop()
        relay.close()
        if cp is not None:
            cp.stop()


def audit_level_of_the_canary(policy: Path) -> str:
    namespace, name = CANARY_CONFIGMAP
    out = subprocess.run(
        [
            sys.executable, "-m", "webhook", "audit-level", "--policy", str(policy),
            "--user", ADMIN_USER, "--group", "system:masters", "--verb", "get",
            "--api-version", "v1", "--resource", "configmaps",
            "--namespace", namespace, "--name", name,
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return str(orjson.loads(out.stdout)["level"])


def silent_alerts_counted(monitor: Monitor) -> float:
    """kubefence_monitor_alerts_total for evasion.feed_silent."""
    return monitor.metric("kubefence_monitor_alerts_total", kind=FEED_SILENT)


def every_file_event_received(f: Fed) -> bool:
    """Whether the monitor counted as many events as the file backend wrote (each once)."""
    received = int(f.monitor.metric("kubefence_monitor_audit_events_total"))
    return received == len(
        {(e["auditID"], e["stage"]) for e in read_audit_log(f.cp.audit_log_path)}
    )


def audited(f: Fed, user_agent: str) -> bool:
    return any(e.get("userAgent") == user_agent for e in read_audit_log(f.cp.audit_log_path))


def canaries_back(monitor: Monitor, count: int, timeout: float) -> list[float]:
    """Poll the last-seen gauge until it has taken `count` new values; those values."""
    values = [monitor.metric(LAST_SEEN)]

    def advanced() -> bool:
        value = monitor.metric(LAST_SEEN)
        if value > values[-1]:
            values.append(value)
        return len(values) > count

    eventually(f"{count} canaries back through the feed", advanced, timeout=timeout)
    return values[1:]


def cut_until_alerted(f: Fed, alerts_before: int) -> dict[str, Any]:
    refused_before = f.relay.refused
    f.relay.cut()
    cut_at = time.monotonic()
    alert = eventually(
        f"evasion.feed_silent within the canary's deadline ({CUT_DEADLINE:.0f}s)",
        lambda: next(iter(f.monitor.alerts(FEED_SILENT)[alerts_before:]), None),
        timeout=CUT_DEADLINE,
    )
    print(f"feed_silent {time.monotonic() - cut_at:.1f}s after the cut")
    assert alert["cause"] == "canary-missing"
    assert alert["user_agent"].startswith(CANARY_AGENT)
    assert alert["canary_sent"]
    # The API server did try to send while cut (its sends were refused, not never made) ...
    eventually(
        "a send refused by the cut relay", lambda: f.relay.refused > refused_before, timeout=SLACK
    )
    # ... and the missing canary was audited: its absence is the feed's, not the request's.
    eventually("the missing canary in the file backend", lambda: audited(f, alert["user_agent"]))
    return alert


def test_a_fed_canary_is_quiet_a_cut_feed_alerts_and_a_restored_one_clears(fed: Fed) -> None:
    monitor, relay = fed.monitor, fed.relay
    assert audit_level_of_the_canary(fed.cp.audit_policy_path) != "None"

    # 1. Fed: several canary periods, every canary back, no alert.
    back = canaries_back(monitor, QUIET_RETURNS, timeout=QUIET_RETURNS * CANARY + OVERDUE + SLACK)
    print(f"{len(back)} canaries back over {back[-1] - back[0]:.1f}s, no alert")
    assert monitor.alerts(FEED_SILENT) == []
    assert silent_alerts_counted(monitor) == 0
    assert relay.forwarded > 0
    assert relay.refused == 0

    # 2. Cut: one feed_silent alert.
    first = cut_until_alerted(fed, 0)
    assert silent_alerts_counted(monitor) == 1

    # 3. Restored: a canary back, the held batches delivered by the API server's retries.
    restored_at = time.time()
    relay.restore()
    eventually(
        "a canary back after the restore",
        lambda: monitor.metric(LAST_SEEN) > restored_at,
        timeout=CANARY + CANARY_REQUEST_TIMEOUT + 2 * CHECK_INTERVAL + SLACK,
    )
    eventually(
        "every event of the file backend at the monitor, those held during the cut too",
        lambda: every_file_event_received(fed),
        timeout=RETRY_HORIZON + SLACK,
    )
    print(f"the held batches delivered {time.time() - restored_at:.1f}s after the restore")
    assert len(monitor.alerts(FEED_SILENT)) == 1  # fed again: quiet again

    # 4. Cut again: the first alert was cleared when the canary came back, so this one alerts.
    second = cut_until_alerted(fed, 1)
    assert second["user_agent"] != first["user_agent"]
    assert len(monitor.alerts(FEED_SILENT)) == 2
