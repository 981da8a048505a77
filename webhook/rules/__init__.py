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
from webhook.settings import Mode, Settings

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


def registry() -> tuple[tuple[str, Check, frozenset[tuple[str, str]]], ...]:
    """The rules in evaluation order, each with the (group, resource) pairs it may judge.

    `decide` indexes them by resource once, so a request only meets the rules that concern it.
    (Imported late: rule modules import this one.)
    """
    from webhook.rules import allow_all, audit_scope, fence, guard, host_network
    from webhook.workloads import WORKLOAD_TEMPLATES

    workloads = frozenset(WORKLOAD_TEMPLATES)
    netpols = frozenset({("networking.k8s.io", "networkpolicies")})
    return (
        (DEFAULT_DENY, fence.check, workloads | {("", "namespaces")}),
        (DEFAULT_DENY, guard.check, netpols),
        (ALLOW_ALL, allow_all.check, netpols),
        (HOST_NETWORK, host_network.check, workloads),
        (AUDIT_SCOPE, audit_scope.check, workloads),
    )
