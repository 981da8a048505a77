"""What a rule returns, and the rule ids as they appear in the `rules` audit annotation."""

from __future__ import annotations

from dataclasses import dataclass

from webhook.settings import Mode

DEFAULT_DENY = "default-deny"
ALLOW_ALL = "allow-all"
HOST_NETWORK = "host-network"
AUDIT_SCOPE = "audit-scope"
NAMESPACE_LABELS = "namespace-labels"


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str  # the rule id, as in the `rules` annotation
    mode: Mode  # the mode that governs this finding in the request's namespace
    passed: bool
    message: str  # the full reason: the denial text, and the decision log
    warning: str = ""  # one line for response.warnings when the mode is warn
    # The namespace whose cached state this result relied on: the shell may re-read it live and
    # decide again before a denial (a watch event a few milliseconds late) or before a fence goes.
    confirm: str = ""


def passed(rule: str, mode: Mode, message: str) -> RuleResult:
    return RuleResult(rule, mode, True, message)
