"""The `--format html` page of `kubefence correlate`: self-contained, and it renders in Chromium.

The screenshot test needs Debian's `chromium` (`apt-get install -y chromium`); it is skipped with
a message when the browser is absent. Set KUBEFENCE_SCREENSHOT=path.png to keep the screenshot.
"""

from __future__ import annotations

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
from webhook.correlate.model import CorrelateOptions, Report
from webhook.correlate.render_html import render_html
from webhook.correlate.render_svg import timeline_svg
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
