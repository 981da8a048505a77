"""Ctrl-C is exit 130 for every command, as a shell reports it (README "Commands")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


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
