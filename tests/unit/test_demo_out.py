"""`kubefence demo --out DIR` overwrites only its own files (issue 26 item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook import certs
from webhook.cli import main
from webhook.commands.demo import MARKER, refuse_foreign_files


def test_demo_refuses_certificates_another_command_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "generate", "--out", str(out), "--service", "s", "--namespace", "n"]) == 0
    before = (out / "tls.crt").read_bytes()
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        f"kubefence demo: {out / 'ca.crt'}: not written by kubefence demo (no {out / MARKER}); "
        "give --out another folder, or remove the file\n"
    )
    assert (out / "tls.crt").read_bytes() == before
    assert not (out / MARKER).exists()


def test_the_demos_own_files_from_an_earlier_run_are_reused(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    certs.ensure_dev_certs(out)
    (out / MARKER).write_text("written by kubefence demo\n")
    refuse_foreign_files(out)  # no error: an earlier demo's files


def test_an_empty_or_new_folder_is_fine(tmp_path: Path) -> None:
    refuse_foreign_files(tmp_path / "new")
    refuse_foreign_files(tmp_path)
