"""The canary's deadline: canaries sent (by user agent) must come back through the feed in time.

Pure: user agents and clock readings in, an `evasion.feed_silent` alert out; at most
`MAX_CANARIES` canaries in flight are remembered, the oldest forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict

from webhook.correlate.detect import FEED_SILENT, Alert
from webhook.correlate.timestamps import format_time

# A canary's user agent starts with this; what follows tells one canary from another.
CANARY_AGENT = "kubefence-monitor-canary/"
MAX_CANARIES = 64  # canaries in flight remembered


class CanaryWatch:
    """The feed's heartbeat: canaries sent (by user agent) must come back through the feed in time.

    `sent` when the API server answered a canary request (so it was audited); `seen` when its
    event arrives; `check` yields one `evasion.feed_silent` alert for the oldest canary overdue by
    more than `timeout` seconds, then stays quiet until a canary comes back.

    One outage is one alert: when a canary comes back after the alert, the canaries still held
    from the outage get `timeout` from that moment. The API server retries each held batch on
    its own jittered schedule (k8s.io/apiserver@v0.37.2 plugin/pkg/audit/buffered/buffered.go
    sends every batch in a goroutine of its own), so an older canary's batch can arrive before
    a newer one's, which the feed then delivers as well or a later canary accounts for.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._silent = False
        self.last_seen: float | None = None

    def sent(self, agent: str, now: float) -> None:
        self._pending[agent] = now
        if len(self._pending) > MAX_CANARIES:
            self._pending.popitem(last=False)

    def seen(self, agent: str, now: float) -> bool:
        """Whether `agent` is a canary sent and not yet seen; every canary sent before it is
        accounted for too. Only the agents sent count: anyone may set a user agent that starts
        with `CANARY_AGENT`, and the event is judged all the same (the caller's business)."""
        if agent not in self._pending:
            return False
        while self._pending:
            first, _ = self._pending.popitem(last=False)
            if first == agent:
                break
        if self._silent:  # the feed is back: the rest of the outage's canaries get time again
            for held, sent in list(self._pending.items()):
                self._pending[held] = max(sent, now)
        self._silent = False
        self.last_seen = now
        return True

    def check(self, now: float) -> Alert | None:
        if self._silent or not self._pending:
            return None
        agent, sent = next(iter(self._pending.items()))
        if now - sent <= self.timeout:
            return None
        self._silent = True
        return Alert(
            event=FEED_SILENT,
            time=format_time(now),
            cause="canary-missing",
            user_agent=agent,
            window_start=format_time(sent),
        )
