"""Renderings of a correlate `Report`: text for terminals, JSON for pipelines, one HTML page.

All three present the same findings. The JSON keys are a contract (issue 8): `summary` with the
integer counts, the lists `bypasses`, `auditGaps`, `retried`, `probers`, `sensitiveAccess`, and
`denials` grouped by rule, namespace and user. The HTML page is self-contained: inline CSS and an
inline SVG timeline, no scripts, no external assets. Pure: strings in, strings out.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from webhook.correlate.model import Bucket, Report
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
        },
        "window": {
            "since": _time(o.since),
            "until": _time(o.until),
            "audit": {"from": _time(report.audit_span[0]), "to": _time(report.audit_span[1])},
            "decisions": {
                "from": _time(report.decision_span[0]),
                "to": _time(report.decision_span[1]),
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
        "timeline": [
            {
                "start": format_time(b.start),
                "seconds": b.seconds,
                "allowed": b.allowed,
                "denied": b.denied,
                "bypasses": b.bypasses,
                "auditGaps": b.gaps,
            }
            for b in report.timeline
        ],
        "maxItems": o.max_items,
    }


def render_json(report: Report) -> bytes:
    return orjson.dumps(to_json(report), option=orjson.OPT_INDENT_2) + b"\n"


# --- text ---------------------------------------------------------------------------------------


def render_text(report: Report) -> str:
    s = report.summary
    o = report.options
    lines = [
        f"kubefence correlate: webhook {', '.join(o.webhook_names)}",
        f"  audit logs  {_span(report.audit_span)}: {s.audit_events} events, "
        f"{s.malformed_lines} malformed lines",
        f"  decisions   {_span(report.decision_span)}: {s.decisions}: {s.joined} joined, "
        f"{s.retried} retried, {s.audit_gaps} audit gaps, {s.uncovered} outside the audit logs",
    ]
    if o.since is not None or o.until is not None:
        lines.append(f"  window      {_time(o.since) or '-'} .. {_time(o.until) or '-'}")
    if s.audit_without_decision:
        lines.append(
            f"  {s.audit_without_decision} audit events carry a decision-id that no decision log "
            "holds: is a replica's log missing?"
        )
    lines += _section(
        f"BYPASSES: {s.bypasses} ({s.fail_open} fail-open, {s.dodged} dodged)",
        ("TIME", "CAUSE", "USER", "VERB", "RESOURCE", "NAMESPACE/NAME", "CODE", "AUDIT ID"),
        (
            (
                b.time,
                b.cause + (" (dry run)" if b.dry_run else ""),
                b.user,
                b.verb,
                _res(b.resource, b.subresource),
                _obj(b.namespace, b.name),
                _code(b.code),
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
                _res(g.resource, g.subresource),
                _obj(g.namespace, g.name),
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
    retried: dict[tuple[str, str, str, str], list[str]] = {}
    for r in report.retried:
        op = r.operation + (" (collection items)" if r.collection else "")
        retried.setdefault((r.user, op, r.resource, _obj(r.namespace, r.name)), []).append(
            r.audit_id
        )
    lines += _section(
        f"RETRIED: {s.retried} (webhook calls after the first of one request; not gaps)",
        ("USER", "OPERATION", "RESOURCE", "NAMESPACE/NAME", "CALLS", "REQUESTS"),
        (
            (*key, str(len(ids)), str(len(set(ids))))
            for key, ids in sorted(retried.items(), key=lambda kv: -len(kv[1]))
        ),
        len(retried) + max(0, s.retried - len(report.retried)),
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
        f"PROBING: {s.probers} users denied {o.probe_threshold}+ times within "
        f"{_duration(o.probe_window)}",
        ("USER", "DENIALS", "FROM", "TO"),
        ((p.user, str(p.denials), p.window_start, p.window_end) for p in report.probers),
        s.probers,
    )
    lines += _section(
        f"SENSITIVE ACCESS: {s.sensitive_access} (exec, attach, portforward, proxy)"
        + (
            ": " + ", ".join(f"{u} {n}" for u, n in report.sensitive_by_user.items())
            if report.sensitive_by_user
            else ""
        ),
        ("TIME", "USER", "VERB", "RESOURCE", "NAMESPACE/NAME", "CODE", "AUDIT ID"),
        (
            (
                a.time,
                a.user,
                a.verb,
                _res(a.resource, a.subresource),
                _obj(a.namespace, a.name),
                _code(a.code),
                a.audit_id,
            )
            for a in report.sensitive_access
        ),
        s.sensitive_access,
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


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
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
.fail-open{background:#d35400}.dodged{background:#c0392b}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:8px}
.none{color:#5a6470}
"""


def render_html(report: Report) -> str:
    s = report.summary
    o = report.options
    cards = [
        ("bypasses", s.bypasses, "bad" if s.bypasses else ""),
        ("fail-open", s.fail_open, "bad" if s.fail_open else ""),
        ("dodged", s.dodged, "bad" if s.dodged else ""),
        ("audit gaps", s.audit_gaps, "warn" if s.audit_gaps else ""),
        ("probers", s.probers, "warn" if s.probers else ""),
        ("sensitive access", s.sensitive_access, ""),
        ("denials", s.denials, ""),
        ("decisions", s.decisions, ""),
        ("joined", s.joined, ""),
        ("retried", s.retried, ""),
        ("outside audit logs", s.uncovered, ""),
        ("audit events", s.audit_events, ""),
        ("malformed lines", s.malformed_lines, "warn" if s.malformed_lines else ""),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>kubefence correlate</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>kubefence correlate</h1>",
        f'<p class="meta">webhook {_e(", ".join(o.webhook_names))} &middot; audit logs '
        f"{_e(_span(report.audit_span))} &middot; decisions {_e(_span(report.decision_span))}"
        + (
            f" &middot; window {_e(_time(o.since) or '-')} .. {_e(_time(o.until) or '-')}"
            if o.since is not None or o.until is not None
            else ""
        )
        + "</p>",
        '<div class="cards">',
        *(
            f'<div class="card {cls}"><b>{n}</b><span>{_e(label)}</span></div>'
            for label, n, cls in cards
        ),
        "</div>",
        "<h2>Timeline</h2>",
        f'<div class="chart">{timeline_svg(report.timeline)}</div>',
        f"<h2>Bypasses ({s.bypasses})</h2>",
        _html_table(
            ("time", "cause", "user", "verb", "resource", "namespace/name", "code", "audit ID"),
            (
                (
                    _e(b.time),
                    f'<span class="tag {b.cause}">{_e(b.cause)}</span>'
                    + (" dry run" if b.dry_run else ""),
                    _e(b.user),
                    _e(b.verb),
                    _e(_res(b.resource, b.subresource)),
                    _e(_obj(b.namespace, b.name)),
                    _e(_code(b.code)),
                    f"<code>{_e(b.audit_id)}</code>",
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
                    _e(g.time),
                    _e(g.decision),
                    _e(g.user),
                    _e(g.operation),
                    _e(_res(g.resource, g.subresource)),
                    _e(_obj(g.namespace, g.name)),
                    f"<code>{_e(g.decision_id)}</code>",
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
        f"{_e(_duration(o.probe_window))})</h2>",
        _html_table(
            ("user", "denials", "from", "to"),
            (
                (_e(p.user), str(p.denials), _e(p.window_start), _e(p.window_end))
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
                    _e(a.time),
                    _e(a.user),
                    _e(a.verb),
                    _e(_res(a.resource, a.subresource)),
                    _e(_obj(a.namespace, a.name)),
                    _e(_code(a.code)),
                    f"<code>{_e(a.audit_id)}</code>",
                )
                for a in report.sensitive_access
            ),
            s.sensitive_access,
        ),
        "</div>",
        f"<h2>Retried decisions ({s.retried})</h2>",
        "<details><summary>webhook calls after the first of one request (conflict retries, "
        "deletecollection items): recorded by the request's audit event</summary>",
        _html_table(
            ("time", "user", "operation", "resource", "namespace/name", "decision ID", "audit ID"),
            (
                (
                    _e(r.time),
                    _e(r.user),
                    _e(r.operation),
                    _e(r.resource),
                    _e(_obj(r.namespace, r.name)),
                    f"<code>{_e(r.decision_id)}</code>",
                    f"<code>{_e(r.audit_id)}</code>",
                )
                for r in report.retried
            ),
            s.retried,
        ),
        "</details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def timeline_svg(buckets: Sequence[Bucket], width: int = 1100, height: int = 280) -> str:
    """Stacked bars of allowed and denied decisions per bucket; bypass and gap markers above."""
    if not buckets:
        return '<p class="none">no decisions or bypasses in the window</p>'
    left, right, top, bottom = 48, 12, 40, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([b.allowed + b.denied for b in buckets] + [1])
    step = plot_w / len(buckets)
    bar = max(step * 0.8, 1.0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of decisions">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" '
        'stroke="#dde1e6"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceef1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#5a6470">{round(peak * frac)}</text>'
        )
    for i, b in enumerate(buckets):
        x = left + i * step + (step - bar) / 2
        h_allowed = plot_h * b.allowed / peak
        h_denied = plot_h * b.denied / peak
        base = top + plot_h
        tip = f"{format_time(b.start)}: {b.allowed} allowed, {b.denied} denied"
        if b.allowed:
            out.append(
                f'<rect x="{x:.1f}" y="{base - h_allowed:.1f}" width="{bar:.1f}" '
                f'height="{h_allowed:.1f}" fill="#5b8c5a"><title>{_e(tip)}</title></rect>'
            )
        if b.denied:
            out.append(
                f'<rect x="{x:.1f}" y="{base - h_allowed - h_denied:.1f}" width="{bar:.1f}" '
                f'height="{h_denied:.1f}" fill="#c0392b"><title>{_e(tip)}</title></rect>'
            )
        cx = x + bar / 2
        if b.bypasses:
            out.append(
                f'<path d="M{cx - 6:.1f},{top - 22} L{cx + 6:.1f},{top - 22} '
                f'L{cx:.1f},{top - 10} Z" '
                f'fill="#d35400"><title>{b.bypasses} bypasses at {_e(format_time(b.start))}'
                "</title></path>"
            )
        if b.gaps:
            out.append(
                f'<rect x="{cx - 4:.1f}" y="{top - 8}" width="8" height="6" fill="#7d3c98">'
                f"<title>{b.gaps} audit gaps at {_e(format_time(b.start))}</title></rect>"
            )
    ticks = min(6, len(buckets))
    for k in range(ticks):
        i = round(k * (len(buckets) - 1) / max(ticks - 1, 1))
        x = left + i * step + step / 2
        label = format_time(buckets[i].start)[:16].replace("T", " ")
        anchor = "start" if k == 0 else "end" if k == ticks - 1 and ticks > 1 else "middle"
        x = left if anchor == "start" else left + plot_w if anchor == "end" else x
        out.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="{anchor}" '
            f'fill="#5a6470">{_e(label)}</text>'
        )
    legend = (
        ("#5b8c5a", "allowed"),
        ("#c0392b", "denied"),
        ("#d35400", "bypass"),
        ("#7d3c98", "audit gap"),
    )
    for k, (color, label) in enumerate(legend):
        lx = left + k * 110
        ly = height - 12
        out.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{ly}" font-size="12" fill="#1d232a">{label}</text>'
        )
    width_note = _duration(buckets[0].seconds)
    out.append(
        f'<text x="{left + plot_w}" y="{height - 12}" font-size="11" text-anchor="end" '
        f'fill="#5a6470">one bar = {_e(width_note)} (UTC)</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]], total: int) -> str:
    body = ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows]
    if not body:
        return '<p class="none">none</p>'
    more = (
        f'<p class="none">... and {total - len(body)} more (--max-items)</p>'
        if total > len(body)
        else ""
    )
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>{more}'


def _count_table(title: str, counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    rows = "".join(
        f'<tr><td>{_e(k or "-")}</td><td class="n">{n}</td></tr>' for k, n in counts.items()
    )
    return f"<table><tr><th>{_e(title)}</th><th>count</th></tr>{rows}</table>"


# --- formatting ---------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _time(epoch: float | None) -> str | None:
    return None if epoch is None else format_time(epoch)


def _span(span: tuple[float | None, float | None]) -> str:
    start, end = span
    if start is None or end is None:
        return "(empty)"
    return f"{format_time(start)} .. {format_time(end)}"


def _res(resource: str, subresource: str) -> str:
    return f"{resource}/{subresource}" if subresource else resource


def _obj(namespace: str, name: str) -> str:
    if namespace and name and namespace != name:
        return f"{namespace}/{name}"
    return name or namespace or "-"


def _code(code: int | None) -> str:
    return "-" if code is None else str(code)


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
