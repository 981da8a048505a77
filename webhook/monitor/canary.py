"""The feed's heartbeat: a small GET of the monitor's own that the audit policy records.

Every `interval` seconds one GET of a ConfigMap (it need not exist: a 404 is audited like a 200)
goes to the API server with a user agent `kubefence-monitor-canary/<process>/<n>`; once the API
server has answered it, `CanaryWatch` expects its event back through the feed. The client is the
one `webhook.cluster.transport` opens; only the user agent is set here, per request (this client
serves the canary alone, one request at a time).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from webhook.cluster.apiserver import ApiError
from webhook.correlate.detect import CANARY_AGENT, CanaryWatch

TIMEOUT = 10.0  # seconds for one canary request


async def send_canaries(
    api: Any, watch: CanaryWatch, configmap: tuple[str, str], *, interval: float, log: Any
) -> None:
    """Send canaries until cancelled; `watch` learns each one the API server answered."""
    from webhook.cluster import transport

    kube = transport.KubeTransport(api)
    process = secrets.token_hex(4)
    path = f"/api/v1/namespaces/{configmap[0]}/configmaps/{configmap[1]}"
    n = 0
    while True:
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
        watch.sent(agent, time.time())
        await asyncio.sleep(interval)
