"""Golden outputs: the bytes kubefence answers and logs, kept byte-for-byte through refactors.

Each case produces bytes and compares them with its file under `expected/`; a difference fails
with a unified diff. `KUBEFENCE_GOLDEN_UPDATE=1 python -m pytest tests/golden` rewrites the files
instead (review the diff before committing it). Covered: the AdmissionReview responses and
decision-log lines of the corpus in `golden_corpus.py`, served by the real aiohttp app (live
confirm, remembered approvals and the internal-error path through a fake confirmer), and the
stdout, stderr and exit code of `kubefence review`, `scan` and `correlate` on fixed inputs.

Normalised, because they vary per run and nowhere else: the decision log's `timestamp` and
`latency_ms`, and the traceback of a logged exception, reduced to its last line (the exception;
file paths and line numbers move with every refactor). Commands run from this folder, so the
paths they print are the relative ones given on the command line. The 400 answers of
`server/bad-requests.txt` quote orjson's own parse errors: an orjson upgrade may change them.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from golden_corpus import CORRELATE_CASES, REVIEW_CASES, SCAN_CASES, ServerCase, server_cases
from objects import deny_all

from webhook import cli, decisionlog
from webhook.cluster.static import load_state
from webhook.cluster.view import ClusterView, NamespaceFacts, StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.netpol import analyse_policy
from webhook.server import Runtime, build_app
from webhook.settings import Settings

HERE = Path(__file__).parent
INPUTS = HERE / "inputs"
EXPECTED = HERE / "expected"
UPDATE = os.environ.get("KUBEFENCE_GOLDEN_UPDATE") == "1"

SERVER_CASES = server_cases()

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


# --- the golden files ---------------------------------------------------------------------------


def assert_golden(relative: str, actual: bytes) -> None:
    """`actual` equals `expected/<relative>`; with KUBEFENCE_GOLDEN_UPDATE=1 it becomes it."""
    path = EXPECTED / relative
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != actual:
            path.write_bytes(actual)
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run with KUBEFENCE_GOLDEN_UPDATE=1", pytrace=False)
    expected = path.read_bytes()
    if expected == actual:
        return
    diff = "".join(
        difflib.unified_diff(
            expected.decode("utf-8", "replace").splitlines(keepends=True),
            actual.decode("utf-8", "replace").splitlines(keepends=True),
            f"expected/{relative}",
            "actual",
        )
    )
    if not diff.strip():  # differing only in bytes a text diff cannot show
        at = next(i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b)
        diff = (
            f"first difference at byte {at}: {expected[at : at + 40]!r} != {actual[at : at + 40]!r}"
        )
    pytest.fail(
        f"golden output changed: {relative}\n{diff}\n"
        "(if the change is intended: KUBEFENCE_GOLDEN_UPDATE=1 python -m pytest tests/golden)",
        pytrace=False,
    )


def _expected_files() -> set[str]:
    return {
        *(f"server/{c.name}.txt" for c in SERVER_CASES),
        *(f"review/{name}.txt" for name, _, _ in REVIEW_CASES),
        *(f"scan/{name}.txt" for name, _ in SCAN_CASES),
        *(f"correlate/{name}.txt" for name, _ in CORRELATE_CASES),
    }


def test_every_expected_file_belongs_to_a_case() -> None:
    present = {p.relative_to(EXPECTED).as_posix() for p in EXPECTED.rglob("*") if p.is_file()}
    orphans = sorted(present - _expected_files())
    if UPDATE:
        for orphan in orphans:
            (EXPECTED / orphan).unlink()
        return
    assert not orphans, f"expected files no case produces: {orphans}"


# --- settings and cluster -----------------------------------------------------------------------


def load_config(name: str) -> Settings:
    """`inputs/config-<name>.yaml` (or the defaults), its audit policy read from `inputs/`."""
    if name == "defaults":
        return parse_settings("", "(defaults)", Path())
    text = (INPUTS / f"config-{name}.yaml").read_text(encoding="utf-8")
    return parse_settings(
        text, f"config-{name}.yaml", Path(), lambda p: (INPUTS / p).read_text(encoding="utf-8")
    )


STATE = load_state(INPUTS / "state")


class StaleView:
    """The fixed cluster, out of touch with the API server for two minutes."""

    def namespace(self, name: str) -> NamespaceFacts | None:
        return STATE.namespace(name)

    @property
    def synced(self) -> bool:
        return True

    def staleness(self) -> float:
        return 120.0


def _with(*replaced: NamespaceFacts) -> StaticView:
    """The fixed cluster with some namespaces as a live read would show them."""
    facts = {name: STATE.namespace(name) for name in STATE.names()}
    merged = {name: f for name, f in facts.items() if f is not None}
    merged.update({f.name: f for f in replaced})
    return StaticView(merged)


def _fences(namespace: str, *names: str) -> list[Any]:
    return [analyse_policy(deny_all(n, namespace)) for n in names]


def _live_views() -> Mapping[str, ClusterView]:
    team_newer = deny_all("zz-newer", "team", "2026-03-01T00:00:00Z")
    return {
        "state": STATE,
        # The cache shows no fence in `open`; the live read shows one.
        "open-fenced": _with(
            namespace_facts("open", _fences("open", "default-deny"), running_pods=1)
        ),
        # The cache shows two fences in `team`; the live read shows the older one gone already.
        "team-oldest-gone": _with(
            namespace_facts("team", [analyse_policy(team_newer)], running_pods=2)
        ),
        # The cache shows `team` fenced; the live read shows every policy gone.
        "team-unfenced": _with(namespace_facts("team", running_pods=2)),
        # The cache shows `quiet` without Pods; the live read shows three running.
        "quiet-busy": _with(
            namespace_facts("quiet", _fences("quiet", "default-deny"), running_pods=3)
        ),
    }


LIVE_VIEWS = _live_views()
VIEWS: Mapping[str, ClusterView] = {"state": STATE, "stale": StaleView(), "empty": StaticView([])}


class FakeConfirmer:
    """A live source answering every read with one view, None (a failed read) or an exception."""

    def __init__(self, result: ClusterView | Exception | None) -> None:
        self.result = result
        self.reads: list[str] = []

    async def confirm(
        self, namespace: str, timeout: float, *, not_before: float | None = None, caller: str = ""
    ) -> ClusterView | None:
        self.reads.append(f"live read: namespace={namespace} timeout={timeout:.1f}")
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _confirmer(live: str) -> FakeConfirmer | None:
    if not live:
        return None
    if live == "failed":
        return FakeConfirmer(None)
    if live == "raises":
        return FakeConfirmer(RuntimeError("the live read broke"))
    return FakeConfirmer(LIVE_VIEWS[live])


# --- the decision log ---------------------------------------------------------------------------


def _product_processors() -> list[Any]:
    """The processor chain `decisionlog.configure` installs, without keeping it installed."""
    saved = structlog.get_config()
    try:
        decisionlog.configure(io.BytesIO())
        return list(structlog.get_config()["processors"])
    finally:
        structlog.configure(**saved)


PROCESSORS = _product_processors()
_TIMESTAMP = re.compile(rb'"timestamp":"[^"]*"')
_LATENCY = re.compile(rb'"latency_ms":[-+.0-9eE]+')
_EXCEPTION = re.compile(rb'"exception":"((?:[^"\\]|\\.)*)"')


def normalise_log(lines: bytes) -> bytes:
    lines = _TIMESTAMP.sub(b'"timestamp":"<timestamp>"', lines)
    lines = _LATENCY.sub(b'"latency_ms":"<latency>"', lines)
    return _EXCEPTION.sub(
        lambda m: b'"exception":"<traceback> ' + m.group(1).rstrip(b"\\n").split(b"\\n")[-1] + b'"',
        lines,
    )


# --- the server ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", SERVER_CASES, ids=lambda c: c.name)
async def test_server_answers_and_logs(case: ServerCase, aiohttp_client: AiohttpClient) -> None:
    stream = io.BytesIO()
    confirmer = _confirmer(case.live)
    runtime = Runtime(
        settings=load_config(case.settings),
        cluster=VIEWS[case.view],
        confirmer=confirmer,
        log=structlog.wrap_logger(structlog.BytesLogger(stream), processors=PROCESSORS),
    )
    client = await aiohttp_client(build_app(runtime))
    out = [f"# settings={case.settings} view={case.view} live={case.live or '-'}\n".encode()]
    for number, step in enumerate(case.steps, 1):
        logged, reads = len(stream.getvalue()), len(confirmer.reads) if confirmer else 0
        headers = {"Content-Type": "application/json"}
        async with client.request(step.method, step.path, data=step.body, headers=headers) as r:
            body = await r.read()
            head = f"status: {r.status} {r.headers.get('Content-Type', '')}"
            if "Allow" in r.headers:
                head += f" allow={r.headers['Allow']}"
        out.append(f"== step {number}: {step.method} {step.path}\n{head}\n".encode())
        out.append(b"response: " + body + (b"" if body.endswith(b"\n") else b"\n"))
        for read in confirmer.reads[reads:] if confirmer else []:
            out.append(read.encode() + b"\n")
        for line in normalise_log(stream.getvalue()[logged:]).splitlines():
            out.append(b"log: " + line + b"\n")
    assert_golden(f"server/{case.name}.txt", b"".join(out))


# --- the command line ---------------------------------------------------------------------------


def run_cli(
    args: list[str],
    stdin: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> bytes:
    """`kubefence ARGS` run from this folder: exit code, stderr and stdout, as bytes."""
    monkeypatch.chdir(HERE)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsysbinary.readouterr()
    return b"exit: %d\n--- stderr\n%s--- stdout\n%s" % (code, err, out)


@pytest.mark.parametrize(("name", "body", "args"), REVIEW_CASES, ids=[c[0] for c in REVIEW_CASES])
def test_review_command(
    name: str,
    body: bytes,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    output = run_cli(["review", *args], body, monkeypatch, capsysbinary)
    assert_golden(f"review/{name}.txt", output)


@pytest.mark.parametrize(("name", "args"), SCAN_CASES, ids=[c[0] for c in SCAN_CASES])
def test_scan_command(
    name: str,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    output = run_cli(["scan", "--state", "inputs/state", *args], b"", monkeypatch, capsysbinary)
    assert_golden(f"scan/{name}.txt", output)


@pytest.mark.parametrize(("name", "args"), CORRELATE_CASES, ids=[c[0] for c in CORRELATE_CASES])
def test_correlate_command(
    name: str,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    output = run_cli(["correlate", *args], b"", monkeypatch, capsysbinary)
    assert_golden(f"correlate/{name}.txt", output)
