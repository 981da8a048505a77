"""The chart's NOTES print `kubefence correlate` with the installed config (issue 26 item 4): the
config names the webhook configuration whose creation tells the requests made before kubefence
was registered, so the first correlate on a fresh cluster does not cry wolf."""

from __future__ import annotations

import shlex
from pathlib import Path

from helmchart import RELEASE, render
from test_chart_monitor import named, notes

from webhook.cli import build_parser
from webhook.config import parse_settings


def test_the_notes_print_the_correlate_line_with_the_config(tmp_path: Path) -> None:
    text = notes({}, tmp_path)
    start = text.index("kubefence correlate ")
    command = text[start : text.index("\n", text.index("\\\n", start) + 2)].replace("\\\n", " ")
    argv = shlex.split(command)[1:]
    args = build_parser(argv).parse_args(argv)  # every flag is one correlate has
    assert str(args.config) == "config.yaml"
    assert args.audit_policy is not None
    # ... and the config step 3 saves names the configuration the chart installs
    config = named(render(), "ConfigMap", f"{RELEASE}-kubefence-config")["data"]["config.yaml"]
    settings = parse_settings(config, "config.yaml", tmp_path, lambda _: "")
    assert settings.drift is not None
    assert settings.drift.webhook_configuration == f"{RELEASE}-kubefence"
    assert any(
        d["kind"] == "ValidatingWebhookConfiguration"
        and d["metadata"]["name"] == f"{RELEASE}-kubefence"
        for d in render()
    )
