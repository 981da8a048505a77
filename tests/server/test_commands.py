"""`kubefence review` and `kubefence demo` as a newcomer runs them (the README's first command)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from objects import deny_all, workload_review

from webhook.cli import main
from webhook.cluster.view import StaticView
from webhook.config import load_settings
from webhook.server import Runtime, build_app
from webhook.settings import Settings

DEMO_CLUSTER = Path(__file__).resolve().parents[2] / "webhook" / "demo" / "cluster.yaml"
README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / "fence.json").write_bytes(
        orjson.dumps({"kind": "List", "items": [deny_all(namespace="team")]})
    )
    return folder


def test_review_allows_exit_0_and_denies_exit_1(
    tmp_path: Path, state: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    for namespace, code, allowed in (("team", 0, True), ("open", 1, False)):
        doc = tmp_path / f"{namespace}.json"
        doc.write_bytes(
            orjson.dumps(workload_review("Deployment", namespace=namespace, uid=f"r-{namespace}"))
        )
        assert main(["review", str(doc), "--state", str(state)]) == code
        out = orjson.loads(capsysbinary.readouterr().out)
        assert out["response"]["uid"] == f"r-{namespace}"
        assert out["response"]["allowed"] is allowed


def test_review_bad_input_exits_2_naming_the_file(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "broken.json"
    doc.write_text('{"kind": "AdmissionReview"}')
    assert main(["review", str(doc), "--state", str(state)]) == 2
    assert f"{doc}: apiVersion must be" in capsys.readouterr().err
    (state / "bad.yaml").write_text("kind: [")
    assert main(["review", str(doc), "--state", str(state)]) == 2
    assert f"{state / 'bad.yaml'}: cannot read: invalid YAML at line 1" in capsys.readouterr().err


def test_review_without_state_says_it_decides_against_an_empty_cluster(
    tmp_path: Path, state: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    doc = tmp_path / "team.json"
    doc.write_bytes(orjson.dumps(workload_review("Deployment", namespace="team", uid="r-1")))
    assert main(["review", str(doc)]) == 1  # nothing is fenced in an empty cluster
    captured = capsysbinary.readouterr()
    assert captured.err.decode() == (
        "kubefence review: no --state DIR: deciding against an empty cluster "
        "(no namespaces, no NetworkPolicies)\n"
    )
    assert orjson.loads(captured.out)["response"]["allowed"] is False
    assert main(["review", str(doc), "--state", str(state)]) == 0
    assert capsysbinary.readouterr().err == b""


def test_review_refuses_what_the_server_answers_with_413(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One limit for both: `server.maxBodyBytes`, with the server's own 413 message."""
    doc = workload_review("Deployment", namespace="team", uid="big")
    doc["request"]["object"]["metadata"]["annotations"] = {"big": "x" * 5000}
    body = orjson.dumps(doc)
    path = tmp_path / "big.json"
    path.write_bytes(body)
    config = tmp_path / "config.yaml"
    config.write_text("server: {maxBodyBytes: 4096}\n")
    assert main(["review", str(path), "--state", str(state), "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"kubefence review: {path}: body exceeds server.maxBodyBytes (4096 bytes)\n"
    settings = load_settings(config)
    status, answer = asyncio.run(post_to_server(settings, body))
    assert (status, f"{path}: {answer['error']}") == (
        413,
        err.strip().removeprefix("kubefence review: "),
    )
    # The default limit (7 MiB) too: a 20 MB review is not decided offline either.
    huge = tmp_path / "huge.json"
    huge.write_bytes(body[:-1] + b" " * (20 << 20) + b"}")
    assert main(["review", str(huge), "--state", str(state)]) == 2
    assert "body exceeds server.maxBodyBytes (7340032 bytes)" in capsys.readouterr().err
    # Within the limit it is decided.
    assert main(["review", str(path), "--state", str(state)]) == 0


async def post_to_server(settings: Settings, body: bytes) -> tuple[int, dict[str, str]]:
    runner = web.AppRunner(build_app(Runtime(settings=settings, cluster=StaticView([]))))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/validate", data=body) as response,
        ):
            return response.status, orjson.loads(await response.read())
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_and_its_curl_lines_show_one_allowed_and_one_denied(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook", "demo", "--out", "certs", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        banner = b""
        deadline = time.monotonic() + 30
        while b"Ctrl-C stops" not in banner and time.monotonic() < deadline:
            assert proc.stderr is not None
            banner += proc.stderr.readline()
        text = banner.decode()
        curls = re.findall(
            r"curl -sS --cacert (\S+) -H 'Content-Type: application/json' --data @(\S+) (\S+)", text
        )
        assert len(curls) == 2, text
        # Absolute paths: the lines work from any folder, not only where demo was started.
        paths = {Path(p) for line in curls for p in line[:2]}
        assert all(p.is_absolute() and p.is_file() for p in paths), paths
        assert all(tmp_path / "certs" in p.parents for p in paths)
        answers = []
        for ca, body, url in curls:
            context = ssl.create_default_context(cafile=ca)
            request = urllib.request.Request(
                url,
                data=Path(body).read_bytes(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, context=context, timeout=5) as r:
                answers.append(orjson.loads(r.read())["response"]["allowed"])
        assert answers == [True, False]
        # The README's offline line, literally, from the folder demo was started in: the demo's
        # own cluster state and review, denied (exit 1), with nothing on stderr.
        (line,) = re.findall(r"^    (kubefence review --state certs/demo \S+)$", README, re.M)
        review = subprocess.run(
            [sys.executable, "-m", "webhook", *line.split()[1:]],
            cwd=tmp_path, capture_output=True, check=False,
        )  # fmt: skip
        assert (review.returncode, review.stderr) == (1, b"")
        assert orjson.loads(review.stdout)["response"]["uid"] == "demo-denied-1"
        assert "sandbox" in orjson.loads(review.stdout)["response"]["status"]["message"]
        # demo prints the same line, with absolute paths.
        (printed,) = re.findall(r"^  kubefence review --state (\S+) (\S+)$", text, re.M)
        assert Path(printed[0]) == tmp_path / "certs" / "demo"
        assert Path(printed[1]) == tmp_path / "certs" / "reviews" / "denied.json"
        assert {p.name for p in Path(printed[0]).iterdir()} == {"cluster.yaml"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    decisions = [orjson.loads(line) for line in out.splitlines() if b"admission.decision" in line]
    assert [d["decision"] for d in decisions] == ["allow", "deny"]
