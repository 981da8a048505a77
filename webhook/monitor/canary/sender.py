"""The canary's sender: a small GET of the monitor's own that the audit policy records.

Every `interval` seconds one GET of a ConfigMap (it need not exist: a 404 is audited like a 200)
goes to the API server with a user agent `kubefence-monitor-canary/<process>/<n>`; once the API
server has answered it, `CanaryWatch` expects its event back through the feed. The client is the
one `webhook.cluster.transport` opens; only the user agent is set here, per request (this client
serves the canary alone, one request at a time; the Lease has a client of its own, or its
writes would carry a canary's agent).

With leader election only the holder of the monitor Lease sends: the canaries come back through
the feed to the holder, so a follower's would never be seen. Each is recorded in the watch of the
feed in force when it was answered (`watch_of`), which a takeover renews.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from webhook.cluster.apiserver import ApiError
from webhook.monitor.canary.watch import CANARY_AGENT, CanaryWatch

TIMEOUT = 10.0  # seconds for one canary request


async def send_canaries(
    api: Any,
    watch_of: Callable[[], CanaryWatch | None],
    configmap: tuple[str, str],
    *,
    interval: float,
    log: Any,
    leading: Callable[[], bool] = lambda: True,
) -> None:
    """Send canaries while `leading`, until cancelled; the watch learns each one answered."""
    from webhook.cluster import transport

    kube = transport.KubeTransport(api)
    process = secrets.token_hex(4)
    path = f"/api/v1/namespaces/{configmap[0]}/configmaps/{configmap[1]}"
    n = 0
    while True:
        if not leading():
            await asyncio.sleep(interval)
            continue
        n += 1
        agent = f"{CANARY_AGENT}{process}/{n}"
        api.user_agent = agent
        try:
            await kube.get(path, timeout=TIMEOUT)
        except ApiError:
            pass  # answered (403, 404 ...): the API server audited it
        except Exception as exc:
            log.warning("monitor.canary_failed", reason=str(exc) or type(exc).__name__)
            await asyncio.sleep(interval)
            continue
        watch = watch_of()
        if watch is not None and leading():
            watch.sent(agent, time.time())
        await asyncio.sleep(interval)
