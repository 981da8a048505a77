"""Drift of kubefence's own admission configuration: what the cluster serves vs what was installed.

The API server never calls webhooks for ValidatingWebhookConfigurations and runs no admission
policy on admission policies or their bindings, so an edit that switches the fence off is only
seen by watching. `webhook_drift` compares every field of every webhook entry with the rendered
expectation, after the API server's own defaulting (pkg/apis/admissionregistration/v1/defaults.go),
and names the differing paths. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_WEBHOOK_DEFAULTS: Mapping[str, Any] = {
    "failurePolicy": "Fail",
    "matchPolicy": "Equivalent",
    "namespaceSelector": {},
    "objectSelector": {},
    "timeoutSeconds": 10,
}
_IGNORED = frozenset({"caBundle"})


@dataclass(frozen=True, slots=True)
class DriftSpec:
    """What the chart installed, as rendered into the config's `drift` section."""

    webhook_configuration: str
    expected: tuple[Mapping[str, Any], ...]
    admission_policy: str = ""
    binding: str = ""
    ca_bundle_injected: bool = False  # cert-manager injects it: its value is not drift


def normalise_webhook(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook entry as the API server stores it: defaults filled, empty selectors as {}."""
    out = {**_WEBHOOK_DEFAULTS, **{k: v for k, v in webhook.items() if v is not None}}
    for key in ("namespaceSelector", "objectSelector"):
        selector = out.get(key) or {}
        out[key] = {k: v for k, v in selector.items() if v}
    out["rules"] = [{"scope": "*", **rule} for rule in out.get("rules") or []]
    config = dict(out.get("clientConfig") or {})
    if isinstance(config.get("service"), Mapping):
        config["service"] = {"port": 443, **config["service"]}
    out["clientConfig"] = config
    return out


def webhook_drift(
    expected: Sequence[Mapping[str, Any]],
    actual: Sequence[Mapping[str, Any]] | None,
    *,
    ignore_ca_bundle: bool = False,
) -> list[str]:
    """The paths where the served webhooks differ from the expected ones ([] when none)."""
    if actual is None:
        return ["(deleted)"]
    want = {str(w.get("name")): normalise_webhook(w) for w in expected}
    have = {str(w.get("name")): normalise_webhook(w) for w in actual}
    paths = [f"webhooks[{name}] (missing)" for name in want if name not in have]
    paths += [f"webhooks[{name}] (unexpected)" for name in have if name not in want]
    for name in want.keys() & have.keys():
        ignored = _IGNORED if ignore_ca_bundle else frozenset()
        paths += _diff(want[name], have[name], f"webhooks[{name}]", ignored)
    return sorted(paths)


def _diff(want: object, have: object, path: str, ignored: frozenset[str]) -> list[str]:
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        out: list[str] = []
        for key in sorted(set(want) | set(have)):
            if key in ignored:
                continue
            out += _diff(want.get(key), have.get(key), f"{path}.{key}", ignored)
        return out
    if isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        out = []
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            out += _diff(w, h, f"{path}[{i}]", ignored)
        return out
    return [] if want == have else [path]
