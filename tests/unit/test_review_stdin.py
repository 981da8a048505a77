"""`kubefence review` reading stdin on a terminal says what it waits for (issue 26 item 4)."""

from __future__ import annotations

import io

import pytest

from webhook.cli import main


class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def _stdin(data: bytes, *, tty: bool) -> io.TextIOWrapper:
    cls = _Terminal if tty else io.TextIOWrapper
    return cls(io.BytesIO(data), encoding="utf-8")


def test_review_on_a_terminal_says_it_reads_stdin_before_reading(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", _stdin(b"", tty=True))
    assert main(["review"]) == 2  # nothing typed before Ctrl-D: bad input, as before
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "kubefence review: reading an AdmissionReview from stdin (end with Ctrl-D); "
        "give a FILE to read one"
    )


def test_review_from_a_pipe_says_nothing_of_the_kind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", _stdin(b"", tty=False))
    assert main(["review"]) == 2
    assert "reading an AdmissionReview" not in capsys.readouterr().err
