"""Ctrl-C is exit 130 for every command, as a shell reports it (README "Commands")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from webhook.cli import main


def _interrupted(argv: list[str], cwd: Path) -> tuple[int, bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(3)  # past the imports, into the loop
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def test_ctrl_c_in_correlate_follow_is_exit_130(tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    audit.write_text("")
    code, err = _interrupted(["correlate", "--follow", str(audit)], tmp_path)
    assert code == 130
    assert b"Traceback" not in err


def test_ctrl_c_in_demo_is_exit_130(tmp_path: Path) -> None:
    code, err = _interrupted(["demo", "--out", str(tmp_path / "certs"), "--port", "0"], tmp_path)
    assert code == 130
    assert b"Traceback" not in err
    assert b"kubefence demo is serving" in err


def _interrupted_once(argv: list[str], cwd: Path, event: bytes) -> tuple[int, bytes, bytes]:
    """Ctrl-C once the command has logged `event` (its signal handlers are in place by then: a
    SIGINT before them would be Python's KeyboardInterrupt, 130 on any code)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = b""
    for line in proc.stdout:
        seen += line
        if event in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, seen + out, err


def _certificates(directory: Path) -> tuple[str, str]:
    assert main(["certs", "generate", "--service", "kf", "--namespace", "ns", "--out", str(directory), "--san", "127.0.0.1"]) == 0  # fmt: skip
    return str(directory / "tls.crt"), str(directory / "tls.key")


def test_ctrl_c_in_serve_is_exit_130(tmp_path: Path) -> None:
    cert, key = _certificates(tmp_path / "certs")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")  # fmt: skip
    argv = ["serve", "--cert", cert, "--key", key, "--state", "state", "--port", "0", "--drain-seconds", "0"]  # fmt: skip
    code, out, err = _interrupted_once(argv, tmp_path, b'"server.started"')
    assert code == 130
    assert b'"server.stopped"' in out  # an orderly stop, as on SIGTERM
    assert b"Traceback" not in err


def test_ctrl_c_in_monitor_is_exit_130(tmp_path: Path) -> None:
    cert, key = _certificates(tmp_path / "certs")
    argv = ["monitor", "--cert", cert, "--key", key, "--port", "0", "--insecure-allow-unauthenticated"]  # fmt: skip
    code, out, err = _interrupted_once(argv, tmp_path, b'"monitor.started"')
    assert code == 130
    assert b'"monitor.stopped"' in out
    assert b"Traceback" not in err
