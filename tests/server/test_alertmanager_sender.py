"""`monitor --alertmanager` (issue 28 item 3): the sender against a stand-in Alertmanager on
loopback: what arrives and with which credentials, retries and backoff, an Alertmanager that
refuses or is gone costing counted alerts only, and the flags that will not do refused in one line.
The real Alertmanager is tests/e2e/test_alertmanager.py's."""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
import trustme
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from webhook.commands import monitor as monitor_command
from webhook.correlate.detect import BYPASS, FEED_SILENT, Alert
from webhook.correlate.timestamps import format_time
from webhook.errors import InputError
from webhook.monitor.alerting import DeliveryPolicy
from webhook.monitor.alertmanager import AlertmanagerOptions, AlertSender

FAST = DeliveryPolicy(backoff=0.01, max_backoff=0.02, tries=3)


def bypass(user: str = "mallory") -> Alert:
    return Alert(
        event=BYPASS,
        time="2026-01-01T00:00:00.000000Z",
        audit_id="a1",
        user=user,
        verb="create",
        resource="apps/deployments",
        namespace="shop",
        cause="fail-open",
    )


class Stand:
    """A stand-in Alertmanager: records what is posted; `answers` are the statuses of the next
    posts (then 200)."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], list[dict[str, Any]]]] = []
        self.answers: list[int] = []

    async def alerts(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.posts.append((dict(request.headers), body))
        status = self.answers.pop(0) if self.answers else 200
        return web.json_response({"error": "no"} if status >= 300 else {}, status=status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/am/api/v2/alerts", self.alerts)
        return app


def metric(registry: CollectorRegistry, line: str) -> float:
    for text in generate_latest(registry).decode().splitlines():
        if text.startswith(line + " "):
            return float(text.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line}")


async def until(what: str, probe: Callable[[], bool]) -> None:
    for _ in range(500):
        if probe():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[AlertSender], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(sender: AlertSender) -> None:
        tasks.append(asyncio.create_task(sender.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_alert_arrives_with_its_labels_and_the_bearer_token(
    aiohttp_server: Any, tmp_path: Path, running: Callable[[AlertSender], None]
) -> None:
    stand = Stand()
    server = await aiohttp_server(stand.app())
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    url = f"http://127.0.0.1:{server.port}/am/"
    registry = CollectorRegistry()
    sender = AlertSender(
        AlertmanagerOptions(urls=(url,), token_file=token, policy=FAST),
        registry=registry,
        log=structlog.get_logger(),
    )
    running(sender)
    sender.alert(bypass())
    await until("a post", lambda: bool(stand.posts))
    headers, body = stand.posts[0]
    assert headers["Authorization"] == "Bearer s3cret-token"
    (alert,) = body
    assert alert["labels"]["alertname"] == "KubefenceBypass"
    assert alert["labels"]["user"] == "mallory"
    assert alert["annotations"]["audit_id"] == "a1"
    assert alert["startsAt"] < alert["endsAt"]
    await until("counted", lambda: metric(registry, _sent(url)) == 1.0)
    count = f'kubefence_monitor_alertmanager_delivery_seconds_count{{alertmanager="{url}"}}'
    assert metric(registry, count) == 1.0


def _sent(url: str) -> str:
    return f'kubefence_monitor_alertmanager_sent_alerts_total{{alertmanager="{url}"}}'


def _dropped(url: str, reason: str) -> str:
    return (
        "kubefence_monitor_alertmanager_dropped_alerts_total"
        f'{{alertmanager="{url}",reason="{reason}"}}'
    )


async def test_over_tls_with_a_client_certificate_and_basic_auth(
    aiohttp_server: Any, tmp_path: Path, running: Callable[[AlertSender], None]
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_context)
    stand = Stand()
    server = await aiohttp_server(stand.app(), ssl=server_context)
    ca_file, cert, key = tmp_path / "ca.crt", tmp_path / "c.crt", tmp_path / "c.key"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("kubefence-monitor")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    password = tmp_path / "password"
    password.write_text("pa55")
    url = f"https://127.0.0.1:{server.port}/am"
    sender = AlertSender(
        AlertmanagerOptions(
            urls=(url,),
            ca=ca_file,
            client_cert=cert,
            client_key=key,
            username="monitor",
            password_file=password,
            policy=FAST,
        ),
        registry=CollectorRegistry(),
        log=structlog.get_logger(),
    )
    running(sender)
    sender.alert(bypass())
    await until("a post over TLS", lambda: bool(stand.posts))
    expected = "Basic " + base64.b64encode(b"monitor:pa55").decode()
    assert stand.posts[0][0]["Authorization"] == expected


async def test_a_failed_post_is_tried_again_with_backoff(
    aiohttp_server: Any, running: Callable[[AlertSender], None]
) -> None:
    stand = Stand()
    stand.answers = [503, 500]
    server = await aiohttp_server(stand.app())
    url = f"http://127.0.0.1:{server.port}/am"
    registry = CollectorRegistry()
    sender = AlertSender(
        AlertmanagerOptions(urls=(url,), policy=FAST), registry=registry, log=structlog.get_logger()
    )
    running(sender)
    sender.alert(bypass())
    await until("delivered on the third try", lambda: metric(registry, _sent(url)) == 1.0)
    assert len(stand.posts) == 3
    retries = f'kubefence_monitor_alertmanager_retries_total{{alertmanager="{url}"}}'
    assert metric(registry, retries) == 2.0
    assert metric(registry, _dropped(url, "failed")) == 0.0


async def test_an_alertmanager_that_is_gone_costs_counted_alerts_and_intake_goes_on(
    running: Callable[[AlertSender], None], unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    registry = CollectorRegistry()
    policy = DeliveryPolicy(backoff=0.01, max_backoff=0.02, tries=2, queue_size=5, batch=2)
    sender = AlertSender(
        AlertmanagerOptions(urls=(url,), policy=policy),
        registry=registry,
        log=structlog.get_logger(),
    )
    with structlog.testing.capture_logs() as logs:
        for n in range(8):  # no sender yet: the queue holds 5, the oldest go
            sender.alert(bypass(user=f"u{n}"))
        assert metric(registry, _dropped(url, "queue_full")) == 3.0
        running(sender)
        await until(
            "the rest failed after their tries",
            lambda: metric(registry, _dropped(url, "failed")) == 5.0,
        )
    failed = [e for e in logs if e["event"] == "alertmanager.failed"]
    assert len(failed) == 1  # once per outage, not per batch
    retries = f'kubefence_monitor_alertmanager_retries_total{{alertmanager="{url}"}}'
    assert metric(registry, retries) == 3.0  # three batches (2, 2, 1), two tries each


async def test_a_refusing_alertmanager_is_not_retried_and_logged_once_without_the_secret(
    aiohttp_server: Any, tmp_path: Path, running: Callable[[AlertSender], None]
) -> None:
    stand = Stand()
    stand.answers = [400, 400]
    server = await aiohttp_server(stand.app())
    url = f"http://127.0.0.1:{server.port}/am"
    token = tmp_path / "token"
    token.write_text("s3cret-token")
    registry = CollectorRegistry()
    sender = AlertSender(
        AlertmanagerOptions(urls=(url,), token_file=token, policy=FAST),
        registry=registry,
        log=structlog.get_logger(),
    )
    with structlog.testing.capture_logs() as logs:
        running(sender)
        sender.alert(bypass("a"))
        await until("refused", lambda: metric(registry, _dropped(url, "refused")) == 1.0)
        sender.alert(bypass("b"))
        await until("refused again", lambda: metric(registry, _dropped(url, "refused")) == 2.0)
    assert len(stand.posts) == 2
    refused = [e for e in logs if e["event"] == "alertmanager.refused"]
    assert len(refused) == 1
    assert "400" in refused[0]["reason"]
    assert "s3cret" not in orjson.dumps(logs).decode()


BASIC = ["--alertmanager-username", "u", "--alertmanager-password-file", "t"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    monitor_command.add_arguments(parser)
    return parser.parse_args(["--cert", "c", "--key", "k", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--alertmanager-token-file", "t"], "--alertmanager-token-file needs --alertmanager URL"),
        (["--alertmanager", "ftp://am"], "http:// or https://"),
        (["--alertmanager", "http://u:p@am:9093"], "no credentials in the URL"),
        (["--alertmanager", "http://am:9093/?x=1"], "no query"),
        (["--alertmanager", "http://am", "--alertmanager-cert", "t"], "go together"),
        (["--alertmanager", "http://am", "--alertmanager-username", "u"], "go together"),
        (["--alertmanager", "http://am", "--alertmanager-token-file", "t", *BASIC], "not both"),
        (["--alertmanager", "http://am", "--alertmanager-token-file", "missing"], "cannot read"),
        (["--alertmanager", "http://am", "--alertmanager-token-file", "empty"], "empty"),
        (["--alertmanager", "http://am", "--alertmanager-ca", "t"], "--alertmanager-ca"),
        (["--alertmanager", "http://am", "--alertmanager-label", "severity=x"], "own labels"),
        (["--alertmanager", "http://am", "--alertmanager-resend", "0"], "above 0"),
    ],
)
def test_flags_that_will_not_deliver_are_refused_in_one_line(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").write_text("token\n")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match=message):
        monitor_command.alertmanager_options(parse(argv))


def test_the_flags_become_the_senders_options(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("token")
    args = parse(
        [
            "--alertmanager", "http://am-0:9093", "--alertmanager", "http://am-1:9093",
            "--alertmanager-token-file", str(token), "--alertmanager-label", "cluster=prod-eu",
            "--alertmanager-resend", "30",
        ]
    )  # fmt: skip
    options = monitor_command.alertmanager_options(args)
    assert options is not None
    assert options.urls == ("http://am-0:9093", "http://am-1:9093")
    assert options.policy.labels == {"cluster": "prod-eu"}
    assert options.policy.resend == 30.0
    assert monitor_command.alertmanager_options(parse([])) is None


async def test_a_silent_feed_ends_in_alertmanager_once_the_canary_comes_back(
    aiohttp_server: Any, running: Callable[[AlertSender], None]
) -> None:
    stand = Stand()
    server = await aiohttp_server(stand.app())
    now = [1_800_000_000.0]
    sender = AlertSender(
        AlertmanagerOptions(urls=(f"http://127.0.0.1:{server.port}/am",), policy=FAST),
        registry=CollectorRegistry(),
        log=structlog.get_logger(),
        clock=lambda: now[0],
    )
    running(sender)
    sender.alert(Alert(event=FEED_SILENT, time="", cause="canary-missing"))
    await until("the silence posted", lambda: len(stand.posts) == 1)
    firing = stand.posts[0][1][0]
    assert firing["endsAt"] > firing["startsAt"]
    now[0] += 5
    sender.tick(now[0] - 10)  # the last canary came back before the silence: still silent
    sender.tick(None)
    await asyncio.sleep(0.05)
    assert len(stand.posts) == 1
    sender.tick(now[0] - 1)  # a canary came back after it
    await until("the end posted", lambda: len(stand.posts) == 2)
    ended = stand.posts[1][1][0]
    assert ended["labels"] == firing["labels"]
    assert ended["startsAt"] == firing["startsAt"]
    assert ended["endsAt"] == format_time(now[0])


async def test_a_rotated_token_is_used_and_a_bad_one_keeps_the_last_good(
    aiohttp_server: Any, tmp_path: Path, running: Callable[[AlertSender], None]
) -> None:
    stand = Stand()
    server = await aiohttp_server(stand.app())
    token = tmp_path / "token"
    token.write_text("first")
    sender = AlertSender(
        AlertmanagerOptions(
            urls=(f"http://127.0.0.1:{server.port}/am",), token_file=token, policy=FAST
        ),
        registry=CollectorRegistry(),
        log=structlog.get_logger(),
    )
    running(sender)
    with structlog.testing.capture_logs() as logs:
        for n, text in enumerate((b"second", b"\xffthird\n", b"")):
            replacement = tmp_path / f"token-{n}"
            replacement.write_bytes(text)
            replacement.replace(token)  # a new file, as a Secret's symlink swap makes
            sender.alert(bypass(user=f"u{n}"))
            await until(f"post {n}", lambda n=n: len(stand.posts) == n + 1)
    assert [headers["Authorization"] for headers, _ in stand.posts] == ["Bearer second"] * 3
    rejected = [e["reason"] for e in logs if e["event"] == "alertmanager.secret_rejected"]
    assert rejected == ["not UTF-8 text", "empty"]
    assert "third" not in orjson.dumps(logs).decode()
