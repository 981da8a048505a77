"""What kube-apiserver sends kubefence: the webhook rules, one source for chart, e2e and correlate.

The chart's `values.yaml` renders these rules into the ValidatingWebhookConfiguration (a test keeps
the two equal), the e2e suite registers them, and `correlate` treats exactly this set as "should
have been decided": controllers' `status` and `scale` writes of workloads never reach the webhook,
so they are not bypasses (a Namespace's `status` and `finalize` writes do: they can set labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WebhookRule:
    """One `rules[]` entry of a ValidatingWebhookConfiguration webhook."""

    operations: tuple[str, ...]
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]  # "resource" or "resource/subresource"
    scope: str = "*"

    def to_manifest(self) -> dict[str, Any]:
        return {
            "operations": list(self.operations),
            "apiGroups": list(self.api_groups),
            "apiVersions": ["*"],
            "resources": list(self.resources),
            "scope": self.scope,
        }

    def matches(self, operation: str, group: str, resource: str, subresource: str) -> bool:
        """As the API server matches a rule (admission/plugin/webhook/predicates/rules)."""
        if "*" not in self.operations and operation not in self.operations:
            return False
        if "*" not in self.api_groups and group not in self.api_groups:
            return False
        wanted = f"{resource}/{subresource}" if subresource else resource
        for pattern in self.resources:
            if pattern in ("*/*", wanted):
                return True
            head, _, tail = pattern.partition("/")
            if not subresource and pattern == "*":
                return True
            if subresource and (
                (head == "*" and tail == subresource) or (head == resource and tail == "*")
            ):
                return True
        return False


DEFAULT_RULES: tuple[WebhookRule, ...] = (
    WebhookRule(("CREATE", "UPDATE"), ("",), ("pods", "replicationcontrollers"), "Namespaced"),
    WebhookRule(
        ("CREATE", "UPDATE"),
        ("apps",),
        ("deployments", "replicasets", "statefulsets", "daemonsets"),
        "Namespaced",
    ),
    WebhookRule(("CREATE", "UPDATE"), ("batch",), ("jobs", "cronjobs"), "Namespaced"),
    WebhookRule(
        ("CREATE", "UPDATE", "DELETE"), ("networking.k8s.io",), ("networkpolicies",), "Namespaced"
    ),
    # CREATE: a new namespace is not fenced yet; CREATE and UPDATE: its labels may let it into
    # allow rules that trust namespace labels.
    WebhookRule(("CREATE", "UPDATE"), ("",), ("namespaces",), "Cluster"),
    # Labels change through these subresources too: they reset only status or spec (upstream
    # pkg/registry/core/namespace/strategy.go). The namespace controller's writes during a
    # deletion change no label and pass at once (`webhook.rules.namespace_labels`).
    WebhookRule(("UPDATE",), ("",), ("namespaces/status", "namespaces/finalize"), "Cluster"),
    WebhookRule(
        ("CONNECT",),
        ("",),
        ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy"),
        "Namespaced",
    ),
    # The kubelet API of a node (exec into any pod on it); cluster-scoped.
    WebhookRule(("CONNECT",), ("",), ("nodes/proxy",), "Cluster"),
    # `kubectl debug`: a rule on plain `pods` does not match this subresource.
    WebhookRule(("UPDATE",), ("",), ("pods/ephemeralcontainers",), "Namespaced"),
)


def rules_from_manifest(raw: Iterable[Mapping[str, Any]]) -> tuple[WebhookRule, ...]:
    """Rules as written in a webhook configuration (the chart's rendering)."""
    return tuple(
        WebhookRule(
            tuple(r.get("operations", ())),
            tuple(r.get("apiGroups", ())),
            tuple(r.get("resources", ())),
            str(r.get("scope", "*")),
        )
        for r in raw
    )


def is_registered(
    rules: Sequence[WebhookRule], operation: str, group: str, resource: str, subresource: str
) -> bool:
    return any(r.matches(operation, group, resource, subresource) for r in rules)
