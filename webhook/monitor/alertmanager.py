"""`monitor --alertmanager URL`: the monitor's alerts posted to Alertmanager's v2 API.

What is posted, when again and what waits is `webhook.monitor.alerting`'s (pure); this is the
sender. `AlertSender.alert` is called where the monitor raises an alert (the server's
`MonitorRuntime.alert`, beside the log line); `run` is a job beside the server.

Invariants:
- Intake never waits on delivery: `alert` is synchronous, O(1) per Alertmanager, never raises;
  alerts wait in a bounded `AlertQueue` per Alertmanager, each of which gets every alert (as
  Prometheus sends to every Alertmanager of a set: they de-duplicate among themselves).
- One sender per Alertmanager posts batches of at most `policy.batch` alerts, one at a time, with
  `policy.tries` tries and backoff (`alerting.retry_delay`); what it could not deliver is dropped
  and counted by reason (`kubefence_monitor_alertmanager_dropped_alerts_total`), and an active
  alert is posted again within `policy.resend` seconds all the same.
- Credentials as Prometheus's `alerting` section has them: the server's CA, a client
  certificate, a bearer token file or basic auth (a username and a password file); files re-read
  when they change. A secret is never logged, and no URL carries one (user info in a URL is
  refused at start).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webhook import tls
from webhook.correlate.detect import Alert
from webhook.monitor.alerting import (
    API_PATH,
    AlertBook,
    AlertQueue,
    DeliveryPolicy,
    Posting,
    retry_delay,
    retryable,
)

TIMEOUT_SECONDS = 10.0  # per post, as Prometheus's alertmanager timeout
TICK_SECONDS = 1.0  # re-posts and resolutions are looked for this often
DROP_REASONS = ("queue_full", "failed", "refused")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class AlertmanagerOptions:
    urls: tuple[str, ...]  # as given (the metrics' and logs' `alertmanager`)
    ca: Path | None = None  # the Alertmanager's CA (default: the system's)
    client_cert: Path | None = None
    client_key: Path | None = None
    token_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    timeout: float = TIMEOUT_SECONDS
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)


def api_url(text: str) -> str:
    """The `POST /api/v2/alerts` URL of an Alertmanager given as `http(s)://host[:port][/prefix]`
    (its `--web.route-prefix`); ValueError with the reason."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("give http:// or https:// and a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "no credentials in the URL (they would be logged): give --alertmanager-username and"
            " --alertmanager-password-file, or --alertmanager-token-file"
        )
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment: the path is the Alertmanager's route prefix")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{API_PATH}"


def read_secret(path: Path) -> str:
    """A token or password in a file (surrounding whitespace dropped); OSError, ValueError."""
    text = path.read_bytes().strip().decode("utf-8")
    if not text:
        raise ValueError("empty")
    if not text.isprintable():
        raise ValueError("not one line of printable text")
    return text


def client_context(o: AlertmanagerOptions) -> ssl.SSLContext:
    """The TLS context of https:// Alertmanagers: their CA, the client pair when given."""
    context = ssl.create_default_context(cafile=str(o.ca) if o.ca is not None else None)
    if o.client_cert is not None and o.client_key is not None:
        context.load_cert_chain(o.client_cert, o.client_key)
    return context


class _Target:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.url = api_url(name)
        self.queue = AlertQueue(size)
        self.ready = asyncio.Event()
        self.refused: int | None = None  # the last 4xx logged (once per status)
        self.failing = False  # the last batch was not delivered (logged once until one is)


class _Secret:
    """A file's secret, re-read when the file changes; the last good one on a bad read."""

    def __init__(self, path: Path, log: Any, what: str) -> None:
        self.path, self.log, self.what = path, log, what
        self._value: str | None = None
        self._signature: Any = None

    def get(self) -> str | None:
        signature = tls.file_signature(self.path)
        if signature != self._signature:
            self._signature = signature
            try:
                self._value = read_secret(self.path)
            except UnicodeDecodeError:  # its message would quote a byte of the secret
                self.log.error(
                    "alertmanager.secret_rejected",
                    what=self.what,
                    file=str(self.path),
                    reason="not UTF-8 text",
                )
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                self.log.error(
                    "alertmanager.secret_rejected",
                    what=self.what,
                    file=str(self.path),
                    reason=reason,
                )
        return self._value


def _length_of(queue: AlertQueue) -> Callable[[], float]:
    return lambda: float(len(queue))


class AlertSender:
    """The alerts of one monitor, to every Alertmanager of `options.urls`."""

    def __init__(
        self,
        options: AlertmanagerOptions,
        *,
        registry: CollectorRegistry,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.log = log
        self.clock = clock
        self.book = AlertBook(options.policy)
        self.targets = [_Target(url, options.policy.queue_size) for url in options.urls]
        self.sent = Counter(
            "kubefence_monitor_alertmanager_sent_alerts_total",
            "Alerts (first posts, re-posts, resolutions) an Alertmanager accepted, by its URL.",
            ["alertmanager"],
            registry=registry,
        )
        self.dropped = Counter(
            "kubefence_monitor_alertmanager_dropped_alerts_total",
            "Alerts not delivered to an Alertmanager, by reason: queue_full (pushed out of the"
            " full queue: intake never waits), failed (every try of their post failed), refused"
            " (a 4xx). One still active is posted again within the re-post period.",
            ["alertmanager", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "kubefence_monitor_alertmanager_retries_total",
            "Posts to an Alertmanager tried again after a failure.",
            ["alertmanager"],
            registry=registry,
        )
        self.queued = Gauge(
            "kubefence_monitor_alertmanager_queue_length",
            "Alerts waiting to be posted to an Alertmanager.",
            ["alertmanager"],
            registry=registry,
        )
        self.active = Gauge(
            "kubefence_monitor_alertmanager_active_alerts",
            "Alerts the monitor keeps active in Alertmanager (posted again each period).",
            registry=registry,
        )
        self.latency = Histogram(
            "kubefence_monitor_alertmanager_delivery_seconds",
            "From raising an alert to an Alertmanager accepting its first post.",
            ["alertmanager"],
            buckets=_LATENCY,
            registry=registry,
        )
        for target in self.targets:
            self.sent.labels(target.name)
            self.retries.labels(target.name)
            for reason in DROP_REASONS:
                self.dropped.labels(target.name, reason)
            self.queued.labels(target.name).set_function(_length_of(target.queue))
        self.active.set_function(lambda: float(len(self.book)))
        o = options
        self._token = _Secret(o.token_file, log, "token") if o.token_file is not None else None
        self._password = (
            _Secret(o.password_file, log, "password") if o.password_file is not None else None
        )
        self._context: ssl.SSLContext | None = None
        self._context_signature: Any = None

    def alert(self, alert: Alert) -> None:
        """An alert the monitor raised: queued for every Alertmanager; never raises or waits."""
        try:
            self._queue([self.book.raised(alert, self.clock())])
        except Exception:  # the batch that raised it is answered whatever happens here
            self.log.exception("alertmanager.failed", alert=alert.event)

    def tick(self, canary_seen: float | None) -> None:
        """Queue what is due now: re-posts, alerts whose lifetime is over, and the end of
        `evasion.feed_silent` once the canary (last seen at `canary_seen`) came back."""
        now = self.clock()
        due = self.book.due(now)
        if canary_seen is not None:
            due += self.book.feed_returned(canary_seen, now)
        self._queue(due)

    def _queue(self, postings: list[Posting]) -> None:
        if not postings:
            return
        for target in self.targets:
            for item in postings:
                if target.queue.put(item) is not None:
                    self.dropped.labels(target.name, "queue_full").inc()
            target.ready.set()

    async def run(self, canary_seen: Callable[[], float | None] = lambda: None) -> None:
        """Send until cancelled, each Alertmanager on its own; `canary_seen`: when the feed's
        canary last came back (None: no canary)."""
        connector = aiohttp.TCPConnector(limit_per_host=2)
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            senders = [self._send(session, target) for target in self.targets]
            await asyncio.gather(self._tick(canary_seen), *senders)

    async def _tick(self, canary_seen: Callable[[], float | None]) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self.tick(canary_seen())
            except Exception:
                self.log.exception("alertmanager.failed")

    async def _send(self, session: aiohttp.ClientSession, target: _Target) -> None:
        batch_size = self.options.policy.batch
        while True:
            await target.ready.wait()
            batch = target.queue.take(batch_size)
            if not len(target.queue):
                target.ready.clear()
            if not batch:
                continue
            try:
                result = await self._post(session, target, batch)
            except Exception:  # the sender goes on with the next batch
                self.log.exception("alertmanager.failed", alertmanager=target.name)
                result = "failed"
            if result == "sent":
                self.sent.labels(target.name).inc(len(batch))
                now = self.clock()
                for item in batch:
                    if item.raised is not None:
                        self.latency.labels(target.name).observe(max(0.0, now - item.raised))
            else:
                self.dropped.labels(target.name, result).inc(len(batch))

    async def _post(
        self, session: aiohttp.ClientSession, target: _Target, batch: list[Posting]
    ) -> str:
        body = orjson.dumps([item.alert for item in batch])
        policy = self.options.policy
        reason = ""
        for attempt in range(policy.tries):
            if attempt:
                self.retries.labels(target.name).inc()
                await asyncio.sleep(retry_delay(attempt, policy))
            headers = {"Content-Type": "application/json", **self._authorization()}
            ssl_context = self._ssl() if target.url.startswith("https:") else None
            try:
                async with session.post(
                    target.url, data=body, headers=headers, ssl=ssl_context or True
                ) as response:
                    status = response.status
                    text = (await response.content.read(300)).decode(errors="replace").strip()
            except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
                reason = str(exc) or type(exc).__name__
                continue
            if status < 300:
                target.refused = None
                if target.failing:
                    target.failing = False
                    self.log.info("alertmanager.recovered", alertmanager=target.name)
                return "sent"
            reason = f"HTTP {status}: {text[:200]}"
            if not retryable(status):
                if target.refused != status:  # a configuration error: once, not per batch
                    target.refused = status
                    self.log.error("alertmanager.refused", alertmanager=target.name, reason=reason)
                return "refused"
        if not target.failing:  # once per outage, not per batch
            target.failing = True
            self.log.warning(
                "alertmanager.failed",
                alertmanager=target.name,
                alerts=len(batch),
                tries=policy.tries,
                reason=reason,
            )
        return "failed"

    def _authorization(self) -> dict[str, str]:
        if self._token is not None:
            token = self._token.get()
            return {"Authorization": f"Bearer {token}"} if token is not None else {}
        if self._password is not None and self.options.username is not None:
            password = self._password.get()
            if password is not None:
                pair = f"{self.options.username}:{password}".encode()
                return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return {}

    def _ssl(self) -> ssl.SSLContext:
        """The client context, made again when the CA or the client pair changed on disk; the
        one in force when the new files do not load (logged)."""
        o = self.options
        files = [p for p in (o.ca, o.client_cert, o.client_key) if p is not None]
        signature = tls.file_signature(*files) if files else None
        if self._context is None or signature != self._context_signature:
            self._context_signature = signature
            try:
                self._context = client_context(o)
            except (OSError, ValueError) as exc:
                if self._context is None:
                    raise
                self.log.error("alertmanager.tls_rejected", reason=str(exc))
        return self._context
