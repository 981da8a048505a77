"""The config file: defaults, every error naming the file and field path, relative policy paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from webhook.cli import main
from webhook.config import load_settings, parse_settings
from webhook.errors import ConfigError
from webhook.netpol import Direction
from webhook.settings import Mode

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
"""


def parse(text: str) -> object:
    return parse_settings(text, "config.yaml", Path())


def test_defaults_are_those_of_the_design() -> None:
    s = load_settings(None)
    assert s.webhook_names == ("validate.kubefence.io",)
    assert s.require == (Direction.INGRESS, Direction.EGRESS)
    assert not s.strict
    assert s.mode("defaultDeny", "x") is Mode.ENFORCE
    assert s.mode("allowAllSelected", "x") is Mode.WARN
    assert s.mode("hostPort", "x") is Mode.WARN
    assert s.mode("auditScope", "x") is Mode.OFF  # off while no policy file is set
    assert s.exemptions.namespaces == {"kube-system", "kube-public", "kube-node-lease"}
    assert s.max_staleness == 60.0
    assert s.deny_on_stale
    assert s.max_body_bytes == 7340032


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "defaultDeny: {require: [Ingress, Sideways]}",
            "config.yaml: defaultDeny.require[1]: must be one of Ingress, Egress",
        ),
        (
            "defaultDeny: {mode: block}",
            "config.yaml: defaultDeny.mode: must be one of enforce, warn, audit, off",
        ),
        ("defaultDeny: {definiton: strict}", "config.yaml: defaultDeny.definiton: unknown key"),
        ("bogus: 1", "config.yaml: bogus: unknown key"),
        ("hostNetwork: [enforce]", "config.yaml: hostNetwork: must be a mapping"),
        (
            "webhookName: kubefence.io",
            "config.yaml: webhookName: must be a fully qualified name of three or more DNS labels",
        ),
        (
            "webhookNames: [a.b.c, Bad_Name.x.y]",
            "config.yaml: webhookNames[1]: must be a fully qualified",
        ),
        (
            "webhookName: a.b.c\nwebhookNames: [d.e.f]",
            "config.yaml: webhookNames: give webhookName or webhookNames, not both",
        ),
        (
            "cache: {maxStaleness: soon}",
            "config.yaml: cache.maxStaleness: must be a positive duration",
        ),
        ("cache: {onStale: maybe}", "config.yaml: cache.onStale: must be one of deny, allow"),
        (
            "server: {maxBodyBytes: -1}",
            "config.yaml: server.maxBodyBytes: must be a positive integer",
        ),
        ("exemptions: {users: alice}", "config.yaml: exemptions.users: must be a list of strings"),
        ("overrides: [{defaultDeny: warn}]", "config.yaml: overrides[0].namespaces: is required"),
        (
            "overrides: [{namespaces: [a], hostNetwork: loud}]",
            "config.yaml: overrides[0].hostNetwork: must be one of",
        ),
        (
            "auditScope: {minLevel: Everything}",
            "config.yaml: auditScope.minLevel: must be one of None, Metadata",
        ),
        (
            "auditScope: {namespaceSelector: {matchExpressions: [{key: a, operator: Near}]}}",
            "config.yaml: auditScope.namespaceSelector.matchExpressions[0].operator",
        ),
        (
            "auditScope: {policyFile: missing.yaml}",
            "config.yaml: auditScope.policyFile: cannot read missing.yaml",
        ),
        ("defaultDeny: [", "config.yaml: line 1: not valid YAML"),
    ],
)
def test_errors_name_the_file_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_bare_off_in_yaml_means_off() -> None:
    assert parse("hostNetwork: {mode: off}").mode("hostNetwork", "x") is Mode.OFF  # type: ignore[attr-defined]
    assert parse("overrides: [{namespaces: [a], hostPort: off}]").mode("hostPort", "a") is Mode.OFF  # type: ignore[attr-defined]


@pytest.mark.parametrize("word", ["no", "yes", "on", "On", "false", "true", "n", "'no'"])
def test_a_yes_or_no_is_not_a_mode_bare_or_quoted(word: str) -> None:
    """YAML 1.1 reads `no` as false: it turned a rule off, while `yes` was an error."""
    for text, field in (
        (f"defaultDeny: {{mode: {word}}}", "defaultDeny.mode"),
        (f"overrides: [{{namespaces: [a], allowAll: {word}}}]", "overrides[0].allowAll"),
    ):
        with pytest.raises(
            ConfigError, match=rf"^config\.yaml: {re.escape(field)}: must be one of"
        ):
            parse(text)


def test_only_true_and_false_are_booleans() -> None:
    text = "drift: {webhookConfiguration: kubefence, ignoreCABundle: %s}"
    assert parse(text % "true").drift.ca_bundle_injected  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"drift\.ignoreCABundle: must be true or false"):
        parse(text % "yes")
    exempt = parse("exemptions: {namespaces: [no, on]}").exemptions  # type: ignore[attr-defined]
    assert exempt.namespaces == {"no", "on"}  # namespaces called so, not booleans


def test_durations() -> None:
    assert parse("cache: {maxStaleness: 1m30s}").max_staleness == 90  # type: ignore[attr-defined]
    assert parse("cache: {maxStaleness: 500ms}").max_staleness == 0.5  # type: ignore[attr-defined]
    assert parse("cache: {maxStaleness: 15}").max_staleness == 15  # type: ignore[attr-defined]


def test_policy_file_is_relative_to_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "audit.yaml").write_text(POLICY)
    config = tmp_path / "config.yaml"
    config.write_text("auditScope: {policyFile: policies/audit.yaml, minLevel: Request}")
    settings = load_settings(config)
    assert settings.audit_policy is not None
    assert settings.audit_policy_file == str(tmp_path / "policies" / "audit.yaml")
    assert settings.mode("auditScope", "x") is Mode.ENFORCE


def test_revision_changes_with_the_audit_policy(tmp_path: Path) -> None:
    (tmp_path / "audit.yaml").write_text(POLICY)
    config = tmp_path / "config.yaml"
    config.write_text("auditScope: {policyFile: audit.yaml}")
    before = load_settings(config).revision
    (tmp_path / "audit.yaml").write_text(POLICY.replace("Metadata", "Request"))
    assert load_settings(config).revision != before


def test_a_bad_audit_policy_names_its_own_file(tmp_path: Path) -> None:
    (tmp_path / "audit.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Loud}]\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text("auditScope: {policyFile: audit.yaml}")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert str(tmp_path / "audit.yaml") in str(caught.value)
    assert "rules[0].level" in str(caught.value)


def test_cli_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("defaultDeny: {require: [Up]}")
    review = tmp_path / "r.json"
    review.write_text("{}")
    assert main(["review", str(review), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: defaultDeny.require[0]: must be one of Ingress, Egress" in err
    assert err.count("\n") == 1
