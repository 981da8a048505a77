"""The process logger: JSON lines on stdout (structlog, orjson); never object content.

One `admission.decision` line per decision, of the fields `webhook.decision.decision_fields`
builds (a contract: docs/design.md, "Decision log"); other events (`config.rejected`,
`fence.lost`, the informer's and the monitor's) go through the same logger. It knows no decision
type: it writes plain fields.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any, BinaryIO

import orjson
import structlog

DECISION_EVENT = "admission.decision"

# The one chain `configure` installs. `write_decision` recognises it by these very instances and
# then renders the decision line itself, as the chain would, in one encoder call.
_PROCESSORS: tuple[Any, ...] = (
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    structlog.processors.JSONRenderer(serializer=orjson.dumps),
)
_DUMPS_DEFAULT = _PROCESSORS[3]._dumps_kw["default"]  # the renderer's fallback for odd values
_UTC = datetime.UTC


def configure(stream: BinaryIO | None = None) -> None:
    """Route structlog to JSON lines on `stream` (default stdout), RFC 3339 UTC timestamps."""
    structlog.configure(
        processors=list(_PROCESSORS),
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def write_decision(log: Any, fields: dict[str, Any]) -> None:
    """Log one `admission.decision` line of `fields` (`decision_fields`) through `log`.

    When `log` ends in `configure`'s chain and a BytesLogger, the line is rendered here as that
    chain renders it (context, fields, event, level, timestamp in that order; the renderer's
    serializer and fallback) and written by the same BytesLogger: the per-request processor
    calls go, the bytes stay. Any other logger (a test's capture, another chain) gets `info`.
    """
    bound = log.bind()  # a cached proxy answers with the same logger; a bound one copies
    processors = getattr(bound, "_processors", None)
    out = getattr(bound, "_logger", None)
    context = getattr(bound, "_context", None)
    if (
        not isinstance(out, structlog.BytesLogger)
        or not isinstance(context, dict)
        or "exc_info" in context
        or not _is_product_chain(processors)
    ):
        log.info(DECISION_EVENT, **fields)
        return
    event = {**context, **fields} if context else fields
    event["event"] = DECISION_EVENT
    event["level"] = "info"
    # TimeStamper(fmt="iso", utc=True)'s own expression.
    event["timestamp"] = datetime.datetime.now(tz=_UTC).isoformat().replace("+00:00", "Z")
    out.msg(orjson.dumps(event, default=_DUMPS_DEFAULT))


def _is_product_chain(processors: object) -> bool:
    if not isinstance(processors, list | tuple) or len(processors) != len(_PROCESSORS):
        return False
    return all(a is b for a, b in zip(processors, _PROCESSORS, strict=True))


def get_logger() -> Any:
    return structlog.get_logger("kubefence")
