"""The `--format html` page of `kubefence correlate`: self-contained, and it renders in Chromium.

The screenshot test needs Debian's `chromium` (`apt-get install -y chromium`); it is skipped with
a message when the browser is absent. Set KUBEFENCE_SCREENSHOT=path.png to keep the screenshot.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from webhook.correlate.correlation import correlate
from webhook.correlate.model import Bucket, CorrelateOptions, Report
from webhook.correlate.render_html import render_html
from webhook.correlate.render_svg import timeline_svg
from webhook.correlate.render_text import render_text
from webhook.correlate.timestamps import format_time, parse_time

FIXTURES = Path(__file__).parent / "fixtures" / "correlate"
WEBHOOK = "validate.kubefence.io"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines(keepends=True)


def _report() -> Report:
    """The real outage logs, plus an hour of synthetic decisions around them and an exec."""
    audit = _lines("outage.audit.log")
    decisions = _lines("outage.decisions.log")
    template: dict[str, Any] = next(orjson.loads(x) for x in decisions if b'"decision":"deny"' in x)
    t0 = parse_time("2026-11-26T06:20:00Z")
    extra = []
    for k in range(240):  # every 15 s for an hour; a burst of denials by one user
        deny = 100 <= k < 118
        doc = dict(
            template,
            decision_id=f"synthetic-{k}",
            user="mallory" if deny else "ci-deployer",
            decision="deny" if deny else "allow",
            allowed=not deny,
            timestamp=format_time(t0 + 15 * k),
        )
        extra.append(orjson.dumps(doc) + b"\n")
    exec_line = next(x for x in audit if b'"subresource":"exec"' in x and b"Complete" in x)
    exec_doc = orjson.loads(exec_line)
    exec_doc["responseStatus"]["code"] = 101
    exec_doc["auditID"] = "0c0ffee0-exec-4000-8000-000000000101"
    options = CorrelateOptions(
        webhook_names=(WEBHOOK,), exempt_namespaces=frozenset({"kube-system"})
    )
    return correlate(
        [("audit", [*audit, orjson.dumps(exec_doc) + b"\n"])],
        [("decisions", sorted([*decisions, *extra], key=_decision_time))],
        options,
    )


def _decision_time(line: bytes) -> float:
    try:
        return parse_time(orjson.loads(line)["timestamp"])
    except (orjson.JSONDecodeError, KeyError):
        return 0.0


def test_page_is_self_contained_and_complete() -> None:
    page = render_html(_report())
    assert page.startswith("<!DOCTYPE html>")
    for forbidden in ("<script", "<link", " src=", "url(", "@import"):
        assert forbidden not in page
    # The only URL is the SVG namespace.
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    assert page.count("<svg") == 1
    for text in (
        "Bypasses (8)",
        "fail-open",
        "dodged",
        "Probing (1",
        "mallory",
        "Sensitive access (1)",
    ):
        assert text in page
    assert "3ca541a9-0567-43f2-98b8-a7a8136151cc" in page  # the fail-open event's auditID


def test_user_text_is_escaped() -> None:
    report = _report()
    evil = replace(report.bypasses[0], user="<img src=x onerror=alert(1)>")
    page = render_html(replace(report, bypasses=(evil,)))
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_an_empty_timeline_says_so() -> None:
    assert "no decisions" in timeline_svg(())


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium: apt-get install -y chromium")
def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(_report()), encoding="utf-8")
    shot = tmp_path / "out.png"
    profile = tempfile.mkdtemp(prefix="kubefence-chromium-")
    try:
        result = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1200,1600",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1600)
    # A blank page compresses to a few KB; tables, cards and the chart do not.
    assert len(data) > 40_000
    keep = os.environ.get("KUBEFENCE_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def _bar_widths(svg: str) -> list[float]:
    """Widths of the allowed and denied bars (the rects with a tooltip)."""
    return [
        float(w) for w in re.findall(r'<rect x="[^"]+" y="[^"]+" width="([^"]+)"[^>]*><title>', svg)
    ]


def test_a_short_span_gets_narrow_bars_not_one_wide_one() -> None:
    """The edge fixture's decisions span a fraction of a second: bars of a second, none wider than
    a sixtieth of the plot, and the axis labelled to the second."""
    report = correlate(
        [("audit", _lines("edge.audit.log"))],
        [("decisions", _lines("edge.decisions.log"))],
        CorrelateOptions(webhook_names=(WEBHOOK,)),
    )
    assert {b.seconds for b in report.timeline} == {1.0}
    svg = timeline_svg(report.timeline)
    widths = _bar_widths(svg)
    assert widths
    assert max(widths) <= 1040 / 60
    assert "one bar = 1s" in svg
    assert re.search(r">2026-11-26 06:56:\d\d<", svg)


def test_the_timeline_tells_fail_open_from_dodged() -> None:
    report = _report()
    page = render_html(report)
    assert sum(b.fail_open for b in report.timeline) == report.summary.fail_open == 2
    assert sum(b.dodged for b in report.timeline) == report.summary.dodged == 6
    assert "bypass: fail-open" in page
    assert "bypass: dodged" in page
    assert "2 fail-open bypasses at " in page or "1 fail-open bypass at " in page
    assert "dodged bypass" in page
    # The legend under the timeline says what each cause means.
    assert "the API server called kubefence and gave up" in page
    assert "no trace of kubefence" in page


def _frame(svg: str) -> tuple[float, float, float, float]:
    """The plot frame: left, top, right, bottom."""
    found = re.search(r'<rect x="([^"]+)" y="([^"]+)" width="([^"]+)" height="([^"]+)" fill="#fbfcfd"', svg)  # fmt: skip
    assert found is not None
    x, y, w, h = map(float, found.groups())
    return x, y, x + w, y + h


def _marker_points(svg: str) -> list[tuple[float, float]]:
    """Every corner of every bypass and gap marker (the shapes whose tooltip says so)."""
    points = []
    for d in re.findall(r'<path[^>]* d="([^"]+)"[^>]*><title>[^<]*(?:bypass|audit gap)', svg):
        points += [(float(a), float(b)) for a, b in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]
    rects = r'<rect[^>]* x="([^"]+)" y="([^"]+)" width="([^"]+)" height="([^"]+)"[^>]*><title>\d+ audit gap'
    for x, y, w, h in re.findall(rects, svg):
        points += [(float(x), float(y)), (float(x) + float(w), float(y) + float(h))]
    return points


def _shown_counts(svg: str) -> int:
    """Bypasses a reader counts without hovering: one a marker, or the number beside it."""
    markers = re.findall(r"<path[^>]*><title>(\d+) (?:dodged|fail-open|unregistered) bypass", svg)
    beside = [int(n) - 1 for n in re.findall(r'class="marker-count"[^>]*>(\d+)<', svg)]
    return len(markers) + sum(beside)


def test_every_bypass_marker_is_inside_the_frame_and_counts_what_it_stands_for() -> None:
    """The outage has 8 bypasses in 3 buckets: 3 markers, each inside the plot, with its count."""
    report = _report()
    svg = timeline_svg(report.timeline)
    left, top, right, bottom = _frame(svg)
    points = _marker_points(svg)
    assert len(points) >= 3 * 3
    outside = [(x, y) for x, y in points if not (left <= x <= right and top <= y <= bottom)]
    assert outside == []
    assert _shown_counts(svg) == report.summary.bypasses == 8


def test_markers_at_the_frame_edges_stay_inside_it() -> None:
    """A full plot's first and last buckets sit at the frame's sides."""
    buckets = [Bucket(float(i), 1.0, 1, 0, 1, 12, 2, unregistered=3) for i in range(200)]
    svg = timeline_svg(buckets)
    left, top, right, bottom = _frame(svg)
    counts = re.findall(
        r'class="marker-count" x="([^"]+)"[^>]*text-anchor="(\w+)"[^>]*>(\d+)<', svg
    )
    assert counts
    for x, anchor, text in counts:  # 11 px type: a digit is at most 7 px wide
        width = 7 * len(text)
        assert left <= float(x) - (width if anchor == "end" else 0)
        assert float(x) + (width if anchor == "start" else 0) <= right
    assert all(left <= x <= right and top <= y <= bottom for x, y in _marker_points(svg))


def test_each_cause_has_its_own_row_so_none_covers_another() -> None:
    """Dodged and unregistered bypasses in one bucket: two diamonds, one above the other."""
    svg = timeline_svg([Bucket(0.0, 1.0, 5, 0, 1, 2, 1, unregistered=4)])
    shapes = re.findall(r'<(?:path|rect) class="marker"[^>]*?(?: d="([^"]+)"| y="([^"]+)")', svg)
    tops = []
    for d, y in shapes:
        ys = [float(b) for _, b in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)] if d else [float(y)]
        tops.append((min(ys), max(ys) if d else float(y) + 6))
    assert len(tops) == 4
    spans = sorted(tops)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # no two overlap
    assert _shown_counts(svg) == 1 + 2 + 4


def test_retried_calls_are_grouped_as_the_text_report_groups_them() -> None:
    """The outage's 144 retried calls of one request: one row with its count, as in the text."""
    report = _report()
    assert report.summary.retried == 144
    page = render_html(report)
    section = page.split("<h2>Retried decisions (144)</h2>")[1].split("</details>")[0]
    rows = [
        [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr><td>.*?</tr>", section)
    ]
    text = render_text(report).split("RETRIED: 144")[1].split("\n\n")[0].splitlines()[2:]
    assert rows == [line.split() for line in text]
    assert len(rows) == 1
    assert rows[0][-2] == "144"
