"""The JSON rendering of a correlate `Report`, for pipelines.

The keys are a contract (issue 8): `summary` with the integer counts, the lists `bypasses`,
`auditGaps`, `retried`, `probers`, `sensitiveAccess`, `fenceRemovals`, and `denials` grouped by
rule, namespace and user; times are RFC 3339 in UTC (`timestamps.format_time`). Keys are added,
never renamed (issue 26: `unregisteredBypasses`, `beforeRegistration`, `notices`,
`registration`, the timeline's `unregistered`). Pure: a report in, bytes out.
"""

from __future__ import annotations

from typing import Any

import orjson

from webhook.correlate.model import Report
from webhook.correlate.render_cells import time_or_none
from webhook.correlate.sources import warnings
from webhook.correlate.timestamps import format_time


def to_json(report: Report) -> dict[str, Any]:
    s = report.summary
    o = report.options
    return {
        "summary": {
            "auditEvents": s.audit_events,
            "decisions": s.decisions,
            "joined": s.joined,
            "retried": s.retried,
            "bypasses": s.bypasses,
            "failOpenBypasses": s.fail_open,
            "dodgedBypasses": s.dodged,
            "auditGaps": s.audit_gaps,
            "uncovered": s.uncovered,
            "auditWithoutDecision": s.audit_without_decision,
            "denials": s.denials,
            "probers": s.probers,
            "sensitiveAccess": s.sensitive_access,
            "malformedLines": s.malformed_lines,
            "logsOverlap": s.logs_overlap,
            "unverifiedClients": s.unverified,
            "fenceRemovals": s.fence_removals,
            "unregisteredBypasses": s.unregistered,
            "beforeRegistration": s.before_registration,
        },
        "warnings": warnings(report),
        "notices": list(report.notices),
        "registration": {
            "webhookConfiguration": o.webhook_configuration or None,
            "firstCreated": time_or_none(report.first_registered),
        },
        "window": {
            "since": time_or_none(o.since),
            "until": time_or_none(o.until),
            "audit": {
                "from": time_or_none(report.audit_span[0]),
                "to": time_or_none(report.audit_span[1]),
            },
            "decisions": {
                "from": time_or_none(report.decision_span[0]),
                "to": time_or_none(report.decision_span[1]),
            },
        },
        "webhookNames": list(o.webhook_names),
        "bypasses": [
            {
                "time": b.time,
                "auditID": b.audit_id,
                "cause": b.cause,
                "webhook": b.webhook,
                "user": b.user,
                "authenticatedUser": b.auth_user or b.user,
                "verb": b.verb,
                "resource": b.resource,
                "subresource": b.subresource,
                "namespace": b.namespace,
                "name": b.name,
                "code": b.code,
                "dryRun": b.dry_run,
            }
            for b in report.bypasses
        ],
        "auditGaps": [
            {
                "time": g.time,
                "decisionID": g.decision_id,
                "decision": g.decision,
                "operation": g.operation,
                "resource": g.resource,
                "subresource": g.subresource,
                "namespace": g.namespace,
                "name": g.name,
                "user": g.user,
                "dryRun": g.dry_run,
                "failedOpenAuditID": g.failed_open_audit_id,
            }
            for g in report.audit_gaps
        ],
        "retried": [
            {
                "time": r.time,
                "decisionID": r.decision_id,
                "auditID": r.audit_id,
                "recordedDecisionID": r.recorded_decision_id,
                "operation": r.operation,
                "resource": r.resource,
                "namespace": r.namespace,
                "name": r.name,
                "user": r.user,
                "collection": r.collection,
            }
            for r in report.retried
        ],
        "denials": {
            "byRule": report.denials_by_rule,
            "byNamespace": report.denials_by_namespace,
            "byUser": report.denials_by_user,
        },
        "probers": [
            {
                "user": p.user,
                "denials": p.denials,
                "windowStart": p.window_start,
                "windowEnd": p.window_end,
            }
            for p in report.probers
        ],
        "sensitiveAccess": [
            {
                "time": a.time,
                "auditID": a.audit_id,
                "decisionID": a.decision_id,
                "user": a.user,
                "authenticatedUser": a.auth_user or a.user,
                "verb": a.verb,
                "resource": a.resource,
                "subresource": a.subresource,
                "namespace": a.namespace,
                "name": a.name,
                "code": a.code,
            }
            for a in report.sensitive_access
        ],
        "sensitiveAccessByUser": report.sensitive_by_user,
        "fenceRemovals": [
            {
                "time": f.time,
                "auditID": f.audit_id,
                "cause": f.cause,
                "user": f.user,
                "authenticatedUser": f.auth_user or f.user,
                "verb": f.verb,
                "namespace": f.namespace,
                "name": f.name,
                "code": f.code,
                "unfenced": list(f.unfenced),
            }
            for f in report.fence_removals
        ],
        "unverifiedClients": [
            {
                "time": u.time,
                "decisionID": u.decision_id,
                "client": u.client,
                "peer": u.peer,
                "decision": u.decision,
                "operation": u.operation,
                "resource": u.resource,
                "subresource": u.subresource,
                "namespace": u.namespace,
                "name": u.name,
                "user": u.user,
            }
            for u in report.unverified
        ],
        "timeline": [
            {
                "start": format_time(b.start),
                "seconds": b.seconds,
                "allowed": b.allowed,
                "denied": b.denied,
                "bypasses": b.bypasses,
                "failOpen": b.fail_open,
                "dodged": b.dodged,
                "unregistered": b.unregistered,
                "auditGaps": b.gaps,
            }
            for b in report.timeline
        ],
        "maxItems": o.max_items,
    }


def render_json(report: Report) -> bytes:
    return orjson.dumps(to_json(report), option=orjson.OPT_INDENT_2) + b"\n"
