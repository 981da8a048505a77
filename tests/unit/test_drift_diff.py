"""Drift of the webhook configuration: API defaulting is not drift; every other edit is named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from webhook.config import parse_settings
from webhook.drift import webhook_drift
from webhook.errors import ConfigError
from webhook.registration import DEFAULT_RULES

RENDERED: dict[str, Any] = {
    "name": "validate.kubefence.io",
    "clientConfig": {
        "service": {"name": "kubefence", "namespace": "kubefence-system", "path": "/validate"},
        "caBundle": "QUJD",
    },
    "rules": [{k: v for k, v in r.to_manifest().items() if k != "scope"} for r in DEFAULT_RULES],
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
    "namespaceSelector": {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
        ]
    },
}


def served() -> dict[str, Any]:
    """The same webhook as the API server returns it: every default filled in."""
    hook = copy.deepcopy(RENDERED)
    hook.update(
        failurePolicy="Fail", matchPolicy="Equivalent", objectSelector={}, timeoutSeconds=10
    )
    hook["clientConfig"]["service"]["port"] = 443
    for rule in hook["rules"]:
        rule["scope"] = "*"
    return hook


def test_api_defaulting_is_not_drift() -> None:
    assert webhook_drift([RENDERED], [served()]) == []


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (
            lambda h: h.update(failurePolicy="Ignore"),
            "webhooks[validate.kubefence.io].failurePolicy",
        ),
        (lambda h: h.update(timeoutSeconds=1), "webhooks[validate.kubefence.io].timeoutSeconds"),
        (
            lambda h: h["rules"][0]["operations"].remove("UPDATE"),
            "webhooks[validate.kubefence.io].rules[0].operations",
        ),
        (
            lambda h: h.update(objectSelector={"matchLabels": {"skip": "no"}}),
            "webhooks[validate.kubefence.io].objectSelector.matchLabels",
        ),
        (
            lambda h: h.update(matchConditions=[{"name": "x", "expression": "false"}]),
            "webhooks[validate.kubefence.io].matchConditions",
        ),
        (
            lambda h: h["clientConfig"].update(caBundle="WFla"),
            "webhooks[validate.kubefence.io].clientConfig.caBundle",
        ),
        (
            lambda h: h["namespaceSelector"]["matchExpressions"][0]["values"].append("prod"),
            "webhooks[validate.kubefence.io].namespaceSelector.matchExpressions[0].values",
        ),
    ],
)
def test_every_edit_is_named_by_path(edit: Any, path: str) -> None:
    hook = served()
    edit(hook)
    assert webhook_drift([RENDERED], [hook]) == [path]


def test_deleted_missing_and_unexpected_webhooks() -> None:
    assert webhook_drift([RENDERED], None) == ["(deleted)"]
    assert webhook_drift([RENDERED], []) == ["webhooks[validate.kubefence.io] (missing)"]
    extra = {**served(), "name": "other.example.io"}
    assert webhook_drift([RENDERED], [served(), extra]) == [
        "webhooks[other.example.io] (unexpected)"
    ]


def test_injected_ca_bundle_is_not_drift() -> None:
    hook = served()
    hook["clientConfig"]["caBundle"] = "bmV3"
    assert webhook_drift([RENDERED], [hook], ignore_ca_bundle=True) == []


def test_drift_config_section() -> None:
    settings = parse_settings(
        "drift: {webhookConfiguration: kubefence, admissionPolicy: kubefence-protect, ignoreCABundle: true, expected: [{name: validate.kubefence.io}]}",
        "config.yaml",
        Path(),
    )
    assert settings.drift is not None
    assert settings.drift.webhook_configuration == "kubefence"
    assert settings.drift.ca_bundle_injected
    with pytest.raises(
        ConfigError, match=r"config\.yaml: drift\.expected: must be a list of webhooks"
    ):
        parse_settings("drift: {webhookConfiguration: k, expected: [{}]}", "config.yaml", Path())
