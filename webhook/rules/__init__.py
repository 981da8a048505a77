"""The rules: each a small pure check `(subject, cluster, settings) -> tuple[RuleResult, ...]`.

A rule returns nothing when the request is not its business, one result per finding otherwise
(`passed` or not), each carrying the mode that governs it. `decide` only combines. `RULES` is the
registry, in evaluation order; `reads_cluster` marks the rules `decide.reconsider` re-runs on a
live read, and `remembered` which of the NetworkPolicy changes this process approved a rule reads:
only those that make it deny more (a forged review may cause a denial, never an allow).

Besides the rules, the registry declares the two facts `decide` needs of them: `FENCE_LOST`, the
annotation computed apart from any verdict (what letting a NetworkPolicy change through leaves
unfenced, on the fence guard's view), and `STRANDED_BY_DENIAL`, the requests a denial would leave
stuck for good (an internal error lets them through with a warning instead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from webhook.admission import AdmissionRequest
from webhook.cluster.view import ClusterView
from webhook.rules import (
    allow_all,
    audit_scope,
    default_deny,
    fence_guard,
    host_network,
    namespace_labels,
)
from webhook.rules.result import RuleResult
from webhook.settings import Settings
from webhook.subject import Subject
from webhook.workloads import WORKLOAD_TEMPLATES

Check = Callable[[Subject, ClusterView, Settings], tuple[RuleResult, ...]]


class Remembered(Enum):
    """Which approved changes a rule reads on top of the cluster view."""

    NONE = "none"
    REMOVALS = "removals"  # fences approved to go: fewer fences, more denials
    ADDITIONS = "additions"  # policies approved to come: more reach, more denials


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    check: Check
    resources: frozenset[tuple[str, str]]  # the (API group, resource) pairs it may judge
    reads_cluster: bool  # its results depend on the cluster view
    remembered: Remembered = Remembered.NONE


@dataclass(frozen=True, slots=True)
class Annotation:
    """An audit annotation of every request let through, whatever the rules answered: `compute`
    on the view `remembered` names gives its comma-separated values (none: no annotation)."""

    key: str
    compute: Callable[[Subject, ClusterView, Settings], tuple[str, ...]]
    remembered: Remembered


_WORKLOADS = frozenset(WORKLOAD_TEMPLATES)
_NETWORK_POLICIES = frozenset({("networking.k8s.io", "networkpolicies")})

FENCE_GUARD = Rule(
    fence_guard.RULE, fence_guard.check, _NETWORK_POLICIES, True, Remembered.REMOVALS
)

# What an allowed NetworkPolicy change leaves unfenced, an exempt user's too, on the view the
# fence guard reads: the audit log's only sign that a fence really went.
FENCE_LOST = Annotation("fence-lost", fence_guard.left_unfenced, FENCE_GUARD.remembered)

# The namespace controller's finalize call of a namespace being deleted.
STRANDED_BY_DENIAL: Callable[[AdmissionRequest], bool] = namespace_labels.finalizing

RULES: tuple[Rule, ...] = (
    Rule(
        default_deny.RULE,
        default_deny.check,
        _WORKLOADS | {("", "namespaces")},
        True,
        Remembered.REMOVALS,
    ),
    FENCE_GUARD,
    Rule(allow_all.RULE, allow_all.check, _NETWORK_POLICIES, True, Remembered.ADDITIONS),
    Rule(host_network.RULE, host_network.check, _WORKLOADS, False),
    # Reads the namespace's labels for auditScope.namespaceSelector; the audit Policy itself is
    # evaluated once per request (memoised on the subject).
    # Services and nodes only for their proxies (CONNECT), the pods' tunnels with the workloads.
    Rule(audit_scope.RULE, audit_scope.check, _WORKLOADS | audit_scope.TUNNEL_RESOURCES, True),
    # Namespace CREATEs and UPDATEs (status and finalize too) against every allow rule that
    # trusts namespace labels (the view's index).
    Rule(namespace_labels.RULE, namespace_labels.check, frozenset({("", "namespaces")}), True),
)
