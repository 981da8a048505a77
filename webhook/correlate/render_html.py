"""The HTML rendering of a correlate `Report`: one self-contained page.

Inline CSS and the inline SVG timeline of `render_svg`, no scripts, no external assets; every
text from the logs is escaped. Pure: a report in, a string out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from webhook.correlate.model import Report
from webhook.correlate.render_cells import (
    before_registration,
    duration,
    escape,
    object_ref,
    resource_path,
    retry_groups,
    retry_rows_total,
    span,
    status_code,
    time_or_none,
    user_cell,
)
from webhook.correlate.render_svg import (
    DODGED_COLOR,
    FAIL_OPEN_COLOR,
    UNREGISTERED_COLOR,
    timeline_svg,
)
from webhook.correlate.sources import warnings

_CSS = (
    """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d232a;
background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6470;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:24px}.card span{color:#5a6470;font-size:12px}
.card.bad{border-color:#c0392b;background:#fdf0ee}.card.bad b{color:#c0392b}
.card.warn{border-color:#d68910;background:#fef7ea}.card.warn b{color:#b9770e}
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e6;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #eceef1;text-align:left;vertical-align:top;
white-space:nowrap}
.scroll{max-width:100%;overflow-x:auto}
th{background:#eef1f4;font-weight:600}td.n{text-align:right}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.tag{border-radius:4px;padding:1px 6px;font-size:12px;color:#fff}
.fail-open{background:FAIL_OPEN}.dodged{background:DODGED}.unregistered{background:UNREGISTERED}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:8px}
.none{color:#5a6470}
.warning{border:1px solid #d68910;background:#fef7ea;border-radius:8px;padding:8px 12px}
""".replace("FAIL_OPEN", FAIL_OPEN_COLOR)
    .replace("DODGED", DODGED_COLOR)
    .replace("UNREGISTERED", UNREGISTERED_COLOR)
)
# What the causes of a bypass mean, under the timeline and above the bypass table.
_CAUSES = (
    '<p class="meta"><span class="tag fail-open">fail-open</span> the API server called kubefence '
    "and gave up (down, slow, TLS broken) and let the request through &middot; "
    '<span class="tag dodged">dodged</span> no trace of kubefence: a selector that no longer '
    "matches, the webhook configuration edited or deleted, a break-glass matchCondition &middot; "
    '<span class="tag unregistered">unregistered</span> no trace of kubefence, made while the '
    "audit log shows its webhook configuration deleted (until re-created)</p>"
)


def render_html(report: Report) -> str:
    s = report.summary
    retried = retry_groups(report.retried)
    o = report.options
    cards = [
        ("bypasses", s.bypasses, "bad" if s.bypasses else ""),
        ("fail-open", s.fail_open, "bad" if s.fail_open else ""),
        ("dodged", s.dodged, "bad" if s.dodged else ""),
        ("unregistered", s.unregistered, "bad" if s.unregistered else ""),
        ("audit gaps", s.audit_gaps, "warn" if s.audit_gaps else ""),
        ("probers", s.probers, "warn" if s.probers else ""),
        ("sensitive access", s.sensitive_access, ""),
        ("fence removals", s.fence_removals, "bad" if s.fence_removals else ""),
        ("denials", s.denials, ""),
        ("decisions", s.decisions, ""),
        ("joined", s.joined, ""),
        ("retried", s.retried, ""),
        ("outside audit logs", s.uncovered, ""),
        ("audit events", s.audit_events, ""),
        ("malformed lines", s.malformed_lines, "warn" if s.malformed_lines else ""),
    ]
    if s.unverified:  # as in the text report: shown only when there are some
        cards.append(("unverified clients", s.unverified, "warn"))
    if s.before_registration:
        cards.append(("before registration", s.before_registration, ""))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>kubefence correlate</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>kubefence correlate</h1>",
        f'<p class="meta">webhook {escape(", ".join(o.webhook_names))} &middot; audit logs '
        f"{escape(span(report.audit_span))} &middot; decisions "
        f"{escape(span(report.decision_span))}"
        + (
            f" &middot; window {escape(time_or_none(o.since) or '-')} .. "
            f"{escape(time_or_none(o.until) or '-')}"
            if o.since is not None or o.until is not None
            else ""
        )
        + "</p>",
        *(f'<p class="warning">warning: {escape(w)}</p>' for w in warnings(report)),
        *(f'<p class="warning">notice: {escape(n)}</p>' for n in report.notices),
        *(
            [
                '<p class="meta">'
                + escape(
                    before_registration(
                        s.before_registration, o.webhook_configuration, report.first_registered
                    )
                )
                + "</p>"
            ]
            if s.before_registration
            else []
        ),
        '<div class="cards">',
        *(
            f'<div class="card {cls}"><b>{n}</b><span>{escape(label)}</span></div>'
            for label, n, cls in cards
        ),
        "</div>",
        "<h2>Timeline</h2>",
        f'<div class="chart">{timeline_svg(report.timeline)}</div>',
        f"<h2>Bypasses ({s.bypasses})</h2>",
        _CAUSES,
        _html_table(
            ("time", "cause", "user", "verb", "resource", "namespace/name", "code", "audit ID"),
            (
                (
                    escape(b.time),
                    f'<span class="tag {b.cause}">{escape(b.cause)}</span>'
                    + (" dry run" if b.dry_run else ""),
                    escape(user_cell(b.user, b.auth_user)),
                    escape(b.verb),
                    escape(resource_path(b.resource, b.subresource)),
                    escape(object_ref(b.namespace, b.name)),
                    escape(status_code(b.code)),
                    f"<code>{escape(b.audit_id)}</code>",
                )
                for b in report.bypasses
            ),
            s.bypasses,
        ),
        f"<h2>Audit gaps ({s.audit_gaps})</h2>",
        _html_table(
            ("time", "decision", "user", "operation", "resource", "namespace/name", "decision ID"),
            (
                (
                    escape(g.time),
                    escape(g.decision),
                    escape(g.user),
                    escape(g.operation),
                    escape(resource_path(g.resource, g.subresource)),
                    escape(object_ref(g.namespace, g.name)),
                    f"<code>{escape(g.decision_id)}</code>",
                )
                for g in report.audit_gaps
            ),
            s.audit_gaps,
        ),
        f"<h2>Denials ({s.denials})</h2>",
        '<div class="row">',
        _count_table("rule", report.denials_by_rule),
        _count_table("namespace", report.denials_by_namespace),
        _count_table("user", report.denials_by_user),
        "</div>",
        f"<h2>Probing ({s.probers}: {o.probe_threshold}+ denials within "
        f"{escape(duration(o.probe_window))})</h2>",
        _html_table(
            ("user", "denials", "from", "to"),
            (
                (escape(p.user), str(p.denials), escape(p.window_start), escape(p.window_end))
                for p in report.probers
            ),
            s.probers,
        ),
        f"<h2>Sensitive access ({s.sensitive_access})</h2>",
        '<div class="row">',
        _count_table("user", report.sensitive_by_user),
        _html_table(
            ("time", "user", "verb", "resource", "namespace/name", "code", "audit ID"),
            (
                (
                    escape(a.time),
                    escape(user_cell(a.user, a.auth_user)),
                    escape(a.verb),
                    escape(resource_path(a.resource, a.subresource)),
                    escape(object_ref(a.namespace, a.name)),
                    escape(status_code(a.code)),
                    f"<code>{escape(a.audit_id)}</code>",
                )
                for a in report.sensitive_access
            ),
            s.sensitive_access,
        ),
        "</div>",
        f"<h2>Fence removals ({s.fence_removals})</h2>",
        "<p>NetworkPolicy writes (deletes, updates, creates) that left a namespace unfenced or "
        "neutralised (undecided: no decision of kubefence's, a bypass too)</p>",
        _html_table(
            ("time", "user", "verb", "namespace/name", "cause", "unfenced", "audit ID"),
            (
                (
                    escape(f.time),
                    escape(user_cell(f.user, f.auth_user)),
                    escape(f.verb),
                    escape(object_ref(f.namespace, f.name)),
                    escape(f.cause),
                    escape(",".join(f.unfenced) or "-"),
                    f"<code>{escape(f.audit_id)}</code>",
                )
                for f in report.fence_removals
            ),
            s.fence_removals,
        ),
        *_unverified(report),
        f"<h2>Retried decisions ({s.retried})</h2>",
        "<details><summary>webhook calls after the first of one request (conflict retries, "
        "deletecollection items): recorded by the request's audit event</summary>",
        # Grouped as the text report groups them: one row per user, operation and object.
        _html_table(
            ("user", "operation", "resource", "namespace/name", "calls", "requests"),
            (
                (
                    escape(g.user),
                    escape(g.operation),
                    escape(g.resource),
                    escape(g.target),
                    str(g.calls),
                    str(g.requests),
                )
                for g in retried
            ),
            retry_rows_total(len(retried), len(report.retried), s.retried),
        ),
        "</details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _unverified(report: Report) -> list[str]:
    """Decisions for another client than the API server: no audit event records them, so they
    are apart from the counts above (the text and JSON reports list them too)."""
    total = report.summary.unverified
    if not total:
        return []
    return [
        f"<h2>Unverified clients ({total})</h2>",
        '<p class="meta">decisions for another client than the API server (its verified '
        "certificate subject, or unauthenticated), never recorded by it; not counted above</p>",
        _html_table(
            (
                "time",
                "client",
                "peer",
                "decision",
                "user",
                "operation",
                "resource",
                "namespace/name",
                "decision ID",
            ),
            (
                (
                    escape(u.time),
                    escape(u.client),
                    escape(u.peer or "-"),
                    escape(u.decision),
                    escape(u.user),
                    escape(u.operation),
                    escape(resource_path(u.resource, u.subresource)),
                    escape(object_ref(u.namespace, u.name)),
                    f"<code>{escape(u.decision_id)}</code>",
                )
                for u in report.unverified
            ),
            total,
        ),
    ]


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]], total: int) -> str:
    body = ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows]
    if not body:
        return '<p class="none">none</p>'
    more = (
        f'<p class="none">... and {total - len(body)} more (--max-items)</p>'
        if total > len(body)
        else ""
    )
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>{more}'


def _count_table(title: str, counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    rows = "".join(
        f'<tr><td>{escape(k or "-")}</td><td class="n">{n}</td></tr>' for k, n in counts.items()
    )
    return f"<table><tr><th>{escape(title)}</th><th>count</th></tr>{rows}</table>"
