"""`kubefence --help` and every command's help, as a newcomer reads them (issue 19 item 9)."""

from __future__ import annotations

import argparse
import re

import pytest

from webhook import __version__
from webhook.cli import COMMANDS, build_parser, main


def test_the_top_level_help_says_what_each_command_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "see `kubefence" not in out  # one real line per command, not a pointer
    for name in COMMANDS:
        assert f"    {name}" in out
    assert "validating admission webhook" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"kubefence {__version__}"


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _actions(sub)
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            found.append(action)
    return found


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_has_help_and_shows_its_default(command: str) -> None:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen = sub.choices[command]
    for action in _actions(chosen):
        if action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"kubefence {command} {action.option_strings or action.dest}: no help"
    text = " ".join(chosen.format_help().split())  # as read, whatever the wrapping
    if any("--format" in a.option_strings for a in _actions(chosen)):
        fmt = next(a for a in _actions(chosen) if "--format" in a.option_strings)
        assert f"(default: {fmt.default})" in text or "(default)" in text


def test_bare_kubefence_prints_the_usage_on_stderr_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: kubefence [-h] [--version] COMMAND")
    assert "a COMMAND is required (serve, demo," in captured.err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["scan", "--bogus"], "kubefence scan: unrecognized arguments: --bogus\n"),  # argparse
        (["scan", "--state", "/nonexistent"], "kubefence scan: "),  # the command's own check
        (["nocommand"], "kubefence: argument COMMAND: invalid choice: 'nocommand'"),
    ],
)
def test_every_error_has_one_prefix_the_command_named(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exited:
        code = exited.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected)
    assert "error:" not in err


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_default_is_said_once(command: str) -> None:
    for parser in _parsers(build_parser([command])):
        text = " ".join(parser.format_help().split())
        twice = re.findall(r"\(([^()]+)\) \(default: \1\)", text)
        assert not twice, f"{parser.prog}: the default said twice: {twice}"
