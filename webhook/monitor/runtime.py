"""What the monitor's handlers share: the runtime (the feed, the tokens, the Lease's state, the
alert sinks) and the keys its apps are found under. Nothing here listens or reads a file:
`webhook.monitor.server` makes one per process and hands it to both apps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from webhook.correlate.detect import Alert
from webhook.monitor.feed import Feed
from webhook.monitor.intake import BODY_BUDGET_BYTES, BodyBudget
from webhook.monitor.metrics import MonitorMetrics

Job = Callable[["MonitorRuntime"], Coroutine[Any, Any, None]]


@dataclass
class MonitorRuntime:
    feed: Feed
    log: Any
    metrics: MonitorMetrics = field(default_factory=MonitorMetrics)
    token: bytes | None = None
    client_subjects: tuple[str, ...] = ()  # with a client CA: the only senders (any when empty)
    shutting_down: bool = False
    received: int = 0  # events counted (duplicates not), for the stop line
    refused: int = 0  # batches answered 503 as a follower, for the stop line
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # judging; shutdown waits on it
    budget: BodyBudget = field(default_factory=lambda: BodyBudget(BODY_BUDGET_BYTES))
    leading: Callable[[], bool] = lambda: True  # holds the monitor Lease (always, unelected)
    lease: str | None = None  # "namespace/name" of that Lease; None: no election
    # POST /decisions: certificates allowed with a client CA (empty: `client_subjects`' rule)
    decision_subjects: tuple[str, ...] = ()
    decisions_token: bytes | None = None  # the decisions port's bearer token
    decisions_port: int | None = None  # the decisions port, once listening
    # Called with each alert beside its log line (`--alertmanager`'s sender); never waits.
    sinks: list[Callable[[Alert], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metrics.leader.set_function(lambda: 1.0 if self.leading() else 0.0)

    def took_over(self) -> None:
        """This replica now holds the Lease: it starts from an empty feed. What the previous
        holder counted (probing windows, de-duplication, canaries) stayed with it."""
        self.feed = self.feed.renewed()

    def alert(self, alert: Alert) -> None:
        self.metrics.alerts.labels(alert.event, alert.cause).inc()
        self.log.warning(alert.event, **alert.fields())
        for sink in self.sinks:
            sink(alert)


RUNTIME = web.AppKey("monitor", MonitorRuntime)
DECISIONS_ONLY = web.AppKey("decisions_only", bool)  # the app of the decisions port
