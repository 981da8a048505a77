"""The kube-apiserver audit Policy (`audit.k8s.io/v1`): loaded, validated and evaluated as it does.

A `Policy` is immutable and holds only what kube-apiserver's validation accepts; `evaluate` is pure
and gives exactly kube-apiserver's answer: the first matching rule's level, omitted stages and
omitManagedFields, or level None with the policy-level values when no rule matches.
"""

from webhook.auditpolicy.load import describe_rule, load_policy, parse_policy
from webhook.auditpolicy.model import (
    API_VERSIONS,
    STAGES,
    Evaluation,
    GroupResources,
    Level,
    PolicyRule,
    RequestAttributes,
)
from webhook.auditpolicy.policy import Policy

__all__ = [
    "API_VERSIONS",
    "STAGES",
    "Evaluation",
    "GroupResources",
    "Level",
    "Policy",
    "PolicyRule",
    "RequestAttributes",
    "describe_rule",
    "load_policy",
    "parse_policy",
]
