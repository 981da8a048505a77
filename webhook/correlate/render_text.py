"""The text rendering of a correlate `Report`, for terminals: a summary, then one table a finding.

Each table lists at most `--max-items` rows and says how many more there are; the counts in the
titles stay exact. Pure: a report in, a string out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from webhook.correlate.model import Report
from webhook.correlate.render_cells import (
    before_registration,
    counted,
    duration,
    object_ref,
    resource_path,
    retry_groups,
    retry_rows_total,
    span,
    status_code,
    time_or_none,
    user_cell,
)
from webhook.correlate.sources import warnings


def render_text(report: Report) -> str:
    s = report.summary
    o = report.options
    lines = [
        f"kubefence correlate: webhook {', '.join(o.webhook_names)}",
        f"  audit logs  {span(report.audit_span)}: {counted(s.audit_events, 'event')}, "
        f"{counted(s.malformed_lines, 'malformed line')}",
        f"  decisions   {span(report.decision_span)}: {s.decisions}: {s.joined} joined, "
        f"{s.retried} retried, {counted(s.audit_gaps, 'audit gap')}, {s.uncovered} outside the "
        "audit logs",
    ]
    if o.since is not None or o.until is not None:
        lines.append(
            f"  window      {time_or_none(o.since) or '-'} .. {time_or_none(o.until) or '-'}"
        )
    lines += [f"  WARNING: {w}" for w in warnings(report)]
    lines += [f"  NOTICE: {n}" for n in report.notices]
    if s.before_registration:
        lines.append(
            "  "
            + before_registration(
                s.before_registration, o.webhook_configuration, report.first_registered
            )
        )
    if s.audit_without_decision:
        carry = "carries" if s.audit_without_decision == 1 else "carry"
        lines.append(
            f"  {counted(s.audit_without_decision, 'audit event')} {carry} a decision-id that no "
            "decision log holds: is a replica's log missing?"
        )
    lines += _section(
        f"BYPASSES: {s.bypasses} ({s.fail_open} fail-open, {s.dodged} dodged"
        + (f", {s.unregistered} unregistered)" if s.unregistered else ")"),
        ("TIME", "CAUSE", "USER", "VERB", "RESOURCE", "NAMESPACE/NAME", "CODE", "AUDIT ID"),
        (
            (
                b.time,
                b.cause + (" (dry run)" if b.dry_run else ""),
                user_cell(b.user, b.auth_user),
                b.verb,
                resource_path(b.resource, b.subresource),
                object_ref(b.namespace, b.name),
                status_code(b.code),
                b.audit_id,
            )
            for b in report.bypasses
        ),
        s.bypasses,
    )
    lines += _section(
        f"AUDIT GAPS: {s.audit_gaps} (decisions the audit logs never recorded)",
        ("TIME", "DECISION", "USER", "OPERATION", "RESOURCE", "NAMESPACE/NAME", "DECISION ID"),
        (
            (
                g.time,
                g.decision,
                g.user,
                g.operation,
                resource_path(g.resource, g.subresource),
                object_ref(g.namespace, g.name),
                g.decision_id
                + (
                    f" (failed open: audit {g.failed_open_audit_id})"
                    if g.failed_open_audit_id
                    else ""
                ),
            )
            for g in report.audit_gaps
        ),
        s.audit_gaps,
    )
    retried = retry_groups(report.retried)
    lines += _section(
        f"RETRIED: {s.retried} (webhook calls after the first of one request; not gaps)",
        ("USER", "OPERATION", "RESOURCE", "NAMESPACE/NAME", "CALLS", "REQUESTS"),
        (
            (g.user, g.operation, g.resource, g.target, str(g.calls), str(g.requests))
            for g in retried
        ),
        retry_rows_total(len(retried), len(report.retried), s.retried),
    )
    lines.append("")
    lines.append(f"DENIALS: {s.denials}")
    for title, counts in (
        ("by rule", report.denials_by_rule),
        ("by namespace", report.denials_by_namespace),
        ("by user", report.denials_by_user),
    ):
        if counts:
            lines.append(f"  {title}: " + ", ".join(f"{k or '-'} {n}" for k, n in counts.items()))
    lines += _section(
        f"PROBING: {counted(s.probers, 'user')} denied {o.probe_threshold}+ times within "
        f"{duration(o.probe_window)}",
        ("USER", "DENIALS", "FROM", "TO"),
        ((p.user, str(p.denials), p.window_start, p.window_end) for p in report.probers),
        s.probers,
    )
    lines += _section(
        f"SENSITIVE ACCESS: {s.sensitive_access} "
        "(exec, attach, portforward, proxies, debug containers)"
        + (
            ": " + ", ".join(f"{u} {n}" for u, n in report.sensitive_by_user.items())
            if report.sensitive_by_user
            else ""
        ),
        ("TIME", "USER", "VERB", "RESOURCE", "NAMESPACE/NAME", "CODE", "AUDIT ID"),
        (
            (
                a.time,
                user_cell(a.user, a.auth_user),
                a.verb,
                resource_path(a.resource, a.subresource),
                object_ref(a.namespace, a.name),
                status_code(a.code),
                a.audit_id,
            )
            for a in report.sensitive_access
        ),
        s.sensitive_access,
    )
    lines += _section(
        f"FENCE REMOVALS: {s.fence_removals} (NetworkPolicy writes that left a namespace "
        "unfenced or neutralised)",
        ("TIME", "USER", "VERB", "NAMESPACE/NAME", "CAUSE", "UNFENCED", "AUDIT ID"),
        (
            (
                f.time,
                user_cell(f.user, f.auth_user),
                f.verb,
                object_ref(f.namespace, f.name),
                f.cause,
                ",".join(f.unfenced) or "-",
                f.audit_id,
            )
            for f in report.fence_removals
        ),
        s.fence_removals,
    )
    if s.unverified:
        lines += _section(
            f"UNVERIFIED CLIENTS: {s.unverified} (decisions for another client than the API "
            "server, never recorded by it; not counted above)",
            (
                "TIME",
                "CLIENT",
                "PEER",
                "DECISION",
                "USER",
                "OPERATION",
                "RESOURCE",
                "NAMESPACE/NAME",
            ),
            (
                (
                    u.time,
                    u.client,
                    u.peer or "-",
                    u.decision,
                    u.user,
                    u.operation,
                    resource_path(u.resource, u.subresource),
                    object_ref(u.namespace, u.name),
                )
                for u in report.unverified
            ),
            s.unverified,
        )
    return "\n".join(lines) + "\n"


def _section(
    title: str, header: Sequence[str], rows: Iterable[Sequence[str]], total: int
) -> list[str]:
    out = ["", title]
    table = [tuple(header), *(tuple(r) for r in rows)]
    if len(table) == 1:
        return out
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    if total > len(table) - 1:
        out.append(f"  ... and {total - len(table) + 1} more (--max-items)")
    return out
