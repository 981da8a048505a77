"""The timeline of the correlate HTML page: an inline SVG of decisions per time bucket.

Stacked bars of allowed and denied decisions, with fail-open, dodged and unregistered bypass
markers (unregistered drawn as dodged's diamond in its own colour) and audit-gap markers in a band
at the top of the plot frame, one row each (inside the frame, above the tallest bar: a marker
outside it reads as decoration, and two causes in one bucket do not cover each other), each with
its count beside it when it stands for more than one, and a legend below; no scripts, so the page
stays self-contained. However few the buckets, the plot has room for `MIN_SLOTS` bars, so a short
span never draws one bar across the page. Pure: buckets in, markup out.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook.correlate.model import Bucket
from webhook.correlate.render_cells import counted, duration, escape
from webhook.correlate.timestamps import format_time

MIN_SLOTS = 60
MARKER_ROW = 12  # px: one row of markers (dodged, unregistered, fail-open, gaps)
MARKER_BAND = 4 * MARKER_ROW + 6  # px at the top of the frame for them; the bars fill the rest
MARKER_HALF = 6  # a marker's half width
ALLOWED_COLOR, DENIED_COLOR = "#5b8c5a", "#c0392b"
FAIL_OPEN_COLOR, DODGED_COLOR, GAP_COLOR = "#d35400", "#1d232a", "#7d3c98"
UNREGISTERED_COLOR = "#a50f60"


def timeline_svg(buckets: Sequence[Bucket], width: int = 1100, height: int = 280) -> str:
    """Stacked bars of allowed and denied decisions per bucket; bypass and gap markers above."""
    if not buckets:
        return '<p class="none">no decisions or bypasses in the window</p>'
    left, right, top, bottom = 48, 12, 14, 46  # the markers are inside the frame: no room above
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([b.allowed + b.denied for b in buckets] + [1])
    step = plot_w / max(len(buckets), MIN_SLOTS)
    bar = max(step * 0.8, 1.0)
    # Fewer buckets than slots: the bars sit in the middle of the plot.
    x0 = left + step * max(0, MIN_SLOTS - len(buckets)) / 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of decisions">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" '
        'stroke="#dde1e6"/>',
    ]
    bars_h = plot_h - MARKER_BAND
    base = top + plot_h
    for frac in (0.0, 0.5, 1.0):
        y = base - bars_h * frac
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceef1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#5a6470">{round(peak * frac)}</text>'
        )
    for i, b in enumerate(buckets):
        x = x0 + i * step + (step - bar) / 2
        h_allowed = bars_h * b.allowed / peak
        h_denied = bars_h * b.denied / peak
        tip = f"{format_time(b.start)}: {b.allowed} allowed, {b.denied} denied"
        if b.allowed:
            out.append(
                f'<rect x="{x:.1f}" y="{base - h_allowed:.1f}" width="{bar:.1f}" '
                f'height="{h_allowed:.1f}" fill="{ALLOWED_COLOR}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        if b.denied:
            out.append(
                f'<rect x="{x:.1f}" y="{base - h_allowed - h_denied:.1f}" width="{bar:.1f}" '
                f'height="{h_denied:.1f}" fill="{DENIED_COLOR}"><title>{escape(tip)}</title></rect>'
            )
        out += _markers(b, x + bar / 2, left, left + plot_w, top)
    # Minutes suffice for wide bars; bars under a minute wide need the seconds to be told apart.
    chars = 16 if buckets[0].seconds >= 60 else 19
    # A label takes about 130 px: fewer ticks when the bars are few and narrow.
    ticks = max(1, min(6, len(buckets), int(len(buckets) * step // 130)))
    for k in range(ticks):
        i = round(k * (len(buckets) - 1) / max(ticks - 1, 1))
        x = x0 + i * step + step / 2
        label = format_time(buckets[i].start)[:chars].replace("T", " ")
        last = k == ticks - 1 and ticks > 1
        full = len(buckets) >= MIN_SLOTS
        anchor = "middle" if not full else "start" if k == 0 else "end" if last else "middle"
        x = left if anchor == "start" else left + plot_w if anchor == "end" else x
        out.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="{anchor}" '
            f'fill="#5a6470">{escape(label)}</text>'
        )
    legend = (
        (ALLOWED_COLOR, "allowed"),
        (DENIED_COLOR, "denied"),
        (FAIL_OPEN_COLOR, "bypass: fail-open"),
        (DODGED_COLOR, "bypass: dodged"),
        (UNREGISTERED_COLOR, "bypass: unregistered"),
        (GAP_COLOR, "audit gap"),
    )
    for k, (color, label) in enumerate(legend):
        lx = left + k * 140
        ly = height - 12
        out.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{ly}" font-size="12" fill="#1d232a">{label}</text>'
        )
    width_note = duration(buckets[0].seconds)
    out.append(
        f'<text x="{left + plot_w}" y="{height - 12}" font-size="11" text-anchor="end" '
        f'fill="#5a6470">one bar = {escape(width_note)} (UTC)</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _markers(b: Bucket, center: float, low: float, high: float, top: int) -> list[str]:
    """The bucket's bypass and gap markers in the band at the top of the frame: dodged,
    unregistered, fail-open, then gaps, one row each; moved in from the frame's sides so none
    crosses them."""
    cx = min(max(center, low + MARKER_HALF + 1), high - MARKER_HALF - 1)
    when = escape(format_time(b.start))
    rows = [top + 3 + MARKER_ROW * k + MARKER_ROW // 2 for k in range(4)]
    out = []
    for count, color, noun, y in (
        (b.dodged, DODGED_COLOR, "dodged bypass", rows[0]),
        (b.unregistered, UNREGISTERED_COLOR, "unregistered bypass", rows[1]),
    ):
        if count:
            out.append(
                f'<path class="marker" d="M{cx:.1f},{y - 5} L{cx + 6:.1f},{y} L{cx:.1f},{y + 5} '
                f'L{cx - 6:.1f},{y} Z" fill="{color}"><title>'
                f"{counted(count, noun, noun + 'es')} at {when}</title></path>"
            )
            out += _count(count, cx, y, high)
    if b.fail_open:
        y = rows[2]
        out.append(
            f'<path class="marker" d="M{cx - 6:.1f},{y - 5} L{cx + 6:.1f},{y - 5} '
            f'L{cx:.1f},{y + 5} Z" fill="{FAIL_OPEN_COLOR}"><title>'
            f"{counted(b.fail_open, 'fail-open bypass', 'fail-open bypasses')} at {when}"
            "</title></path>"
        )
        out += _count(b.fail_open, cx, y, high)
    if b.gaps:
        y = rows[3]
        out.append(
            f'<rect class="marker" x="{cx - 4:.1f}" y="{y - 3}" width="8" height="6" '
            f'fill="{GAP_COLOR}"><title>{counted(b.gaps, "audit gap")} at {when}</title></rect>'
        )
        out += _count(b.gaps, cx, y, high)
    return out


def _count(n: int, cx: float, y: int, high: float) -> list[str]:
    """A marker's count beside it, when it stands for more than one; to its left near the
    frame's right side."""
    if n < 2:
        return []
    text = str(n)
    width = 7 * len(text) + 2
    right = cx + MARKER_HALF + 2 + width <= high
    x, anchor = (cx + MARKER_HALF + 2, "start") if right else (cx - MARKER_HALF - 2, "end")
    return [
        f'<text class="marker-count" x="{x:.1f}" y="{y + 4}" font-size="11" '
        f'text-anchor="{anchor}" fill="#1d232a">{text}</text>'
    ]
