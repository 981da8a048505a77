"""The decision log: one JSON line per decision on stdout (structlog, orjson); never object content.

Field names are a contract (DESIGN.md §2) that `kubefence correlate` and users' pipelines read.
Other events (`config.rejected`, `fence.lost`, ...) go through the same logger.
"""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

import orjson
import structlog

from webhook.admission import AdmissionRequest
from webhook.decide import Decision

DECISION_EVENT = "admission.decision"


def configure(stream: BinaryIO | None = None) -> None:
    """Route structlog to JSON lines on `stream` (default stdout), RFC 3339 UTC timestamps."""
    structlog.configure(
        # Short on purpose: every processor runs once per admission request.
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def get_logger() -> Any:
    return structlog.get_logger("kubefence")


def decision_fields(
    request: AdmissionRequest,
    decision: Decision,
    *,
    cache_synced: bool,
    latency_ms: float,
    client: str | None = None,
    peer: str | None = None,
) -> dict[str, Any]:
    """The fields of one `admission.decision` line (the caller adds the event name and level)."""
    fields: dict[str, Any] = {
        "decision_id": request.uid,
        "decision": decision.verdict,
        "allowed": decision.allowed,
        "mode": decision.mode,
        "rules": [
            {
                "id": r.rule,
                "result": "pass" if r.passed else "fail",
                "mode": r.mode.value,
                "message": r.message,
            }
            for r in decision.results
        ],
        "operation": request.operation,
        "dry_run": request.dry_run,
        "kind": str(request.kind),
        "resource": _resource(request),
        "subresource": request.sub_resource,
        "namespace": decision.namespace,
        "name": decision.name,
        "user": request.user.username,
        "groups": list(request.user.groups),
        "audit_annotations": dict(decision.annotations),
        "policy_revision": decision.annotations.get("policy-revision", ""),
        "cache_synced": cache_synced,
        "latency_ms": round(latency_ms, 3),
    }
    if decision.exempt:
        fields["exempt"] = decision.exempt
    if client:
        fields["client"] = client
    if peer:
        fields["peer"] = peer
    return fields


def _resource(request: AdmissionRequest) -> str:
    group = request.resource.group
    return f"{group}/{request.resource.resource}" if group else request.resource.resource
