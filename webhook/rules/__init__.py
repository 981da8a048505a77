"""The rules: each a small pure check `(request, cluster, settings) -> tuple[RuleResult, ...]`.

A rule returns nothing when the request is not its business, one result per finding otherwise
(`passed` or not), each carrying the mode that governs it. `decide` only combines. The table below
is the registry, in evaluation order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from webhook.admission import AdmissionRequest
from webhook.cluster.view import ClusterView
from webhook.config import Mode, Settings

DEFAULT_DENY = "default-deny"
ALLOW_ALL = "allow-all"
HOST_NETWORK = "host-network"
AUDIT_SCOPE = "audit-scope"


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


Check = Callable[[AdmissionRequest, ClusterView, Settings], tuple[RuleResult, ...]]


def registry() -> tuple[tuple[str, Check], ...]:
    """The rules in evaluation order (imported late: rule modules import this one)."""
    from webhook.rules import allow_all, audit_scope, fence, guard, host_network

    return (
        (DEFAULT_DENY, fence.check),
        (DEFAULT_DENY, guard.check),
        (ALLOW_ALL, allow_all.check),
        (HOST_NETWORK, host_network.check),
        (AUDIT_SCOPE, audit_scope.check),
    )
