"""The feed's heartbeat: canaries the monitor sends, and the deadline for their events' return.

`watch` is pure (user agents and clock readings in, an `evasion.feed_silent` alert out) and is
what the feed imports; `sender` makes the requests, over the transport's client, and only the
monitor's commands start it. The alert kind itself is the detection core's
(`webhook.correlate.detect.FEED_SILENT`), as every alert kind is.
"""

from webhook.monitor.canary.sender import TIMEOUT, send_canaries
from webhook.monitor.canary.watch import CANARY_AGENT, MAX_CANARIES, CanaryWatch

__all__ = ["CANARY_AGENT", "MAX_CANARIES", "TIMEOUT", "CanaryWatch", "send_canaries"]
