"""An audit Policy evaluated exactly as kube-apiserver does (k8s.io/apiserver pkg/audit/policy).

A `Policy` is immutable; `evaluate` is pure and gives the first matching rule's level, omitted
stages and omitManagedFields, or level None with the policy-level values when no rule matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from webhook.auditpolicy.index import RuleIndex
from webhook.auditpolicy.model import (
    API_VERSIONS,
    Evaluation,
    GroupResources,
    Level,
    PolicyRule,
    RequestAttributes,
)

# --- matching (k8s.io/apiserver pkg/audit/policy/checker.go) -------------------------------------


class _GroupMatcher:
    """One GroupResources entry with its resource patterns pre-split by the form they take."""

    __slots__ = ("every_resource", "exact", "group", "names", "star", "star_subs", "whole")

    def __init__(self, gr: GroupResources) -> None:
        self.group = gr.group
        self.names = frozenset(gr.resource_names) if gr.resource_names else None
        # checker.go: an entry without resources matches every resource, ignoring resourceNames.
        self.every_resource = not gr.resources
        self.star = "*" in gr.resources
        self.exact = frozenset(gr.resources)  # "pods", "pods/log": resource[/subresource]
        self.star_subs = frozenset(r[2:] for r in gr.resources if r.startswith("*/"))
        # "pods/*" compares only the resource, so it also matches "pods" with no subresource.
        self.whole = frozenset(r[:-2] for r in gr.resources if r.endswith("/*"))

    def matches(self, attrs: RequestAttributes) -> bool:
        if self.group not in (attrs.api_group, "*"):  # "*" since kube-apiserver 1.36
            return False
        if self.every_resource:
            return True
        if self.names is not None and attrs.name not in self.names:
            return False  # an unnamed request (create, list) has name "" and fails here
        if self.star or attrs.resource in self.whole:
            return True
        sub = attrs.subresource
        if not sub:
            return attrs.resource in self.exact
        return f"{attrs.resource}/{sub}" in self.exact or sub in self.star_subs


class _RuleMatcher:
    """A PolicyRule compiled to sets; `matches` is checker.go's ruleMatches."""

    __slots__ = ("groups", "namespaces", "resources", "scope", "urls", "users", "verbs")

    def __init__(self, rule: PolicyRule) -> None:
        self.users = frozenset(rule.users) if rule.users else None
        self.groups = frozenset(rule.user_groups) if rule.user_groups else None
        self.verbs = frozenset(rule.verbs) if rule.verbs else None
        self.namespaces = frozenset(rule.namespaces) if rule.namespaces else None
        self.resources = tuple(_GroupMatcher(gr) for gr in rule.resources)
        self.urls = rule.non_resource_urls
        if rule.namespaces or rule.resources:
            self.scope = "resource"
        elif rule.non_resource_urls:
            self.scope = "nonresource"
        else:
            self.scope = "any"

    def matches(self, attrs: RequestAttributes) -> bool:
        if self.users is not None and (attrs.user is None or attrs.user not in self.users):
            return False
        if self.groups is not None and (attrs.user is None or self.groups.isdisjoint(attrs.groups)):
            return False
        if self.verbs is not None and attrs.verb not in self.verbs:
            return False
        if self.scope == "resource":
            return self._matches_resource(attrs)
        if self.scope == "nonresource":
            return not attrs.resource_request and any(
                _path_matches(attrs.path, u) for u in self.urls
            )
        return True

    def _matches_resource(self, attrs: RequestAttributes) -> bool:
        if not attrs.resource_request:
            return False
        # Non-namespaced resources (and all-namespace lists) carry namespace "".
        if self.namespaces is not None and attrs.namespace not in self.namespaces:
            return False
        return not self.resources or any(gm.matches(attrs) for gm in self.resources)


def _path_matches(path: str, spec: str) -> bool:
    if spec in ("*", path):
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


# --- the policy -----------------------------------------------------------------------------------


class Policy:
    """A validated audit Policy; `evaluate` is kube-apiserver's EvaluatePolicyRule."""

    __slots__ = (
        "_hits",
        "_index",
        "_matchers",
        "_miss",
        "api_version",
        "omit_managed_fields",
        "omit_stages",
        "rules",
    )

    def __init__(
        self,
        rules: Sequence[PolicyRule],
        omit_stages: Iterable[str] = (),
        omit_managed_fields: bool = False,
        api_version: str = API_VERSIONS[0],
    ) -> None:
        # Construct through parse_policy/load_policy to get kube-apiserver's validation.
        self.rules: tuple[PolicyRule, ...] = tuple(rules)
        self.omit_stages: frozenset[str] = frozenset(omit_stages)
        self.omit_managed_fields = omit_managed_fields
        self.api_version = api_version
        self._matchers = tuple(_RuleMatcher(rule) for rule in self.rules)
        # checker.go NewPolicyRuleEvaluator: a rule omits its own stages and the policy's.
        self._hits = tuple(
            Evaluation(
                rule.level,
                i,
                self.omit_stages | frozenset(rule.omit_stages),
                omit_managed_fields
                if rule.omit_managed_fields is None
                else rule.omit_managed_fields,
            )
            for i, rule in enumerate(self.rules)
        )
        self._miss = Evaluation(Level.NONE, None, self.omit_stages, omit_managed_fields)
        self._index = RuleIndex(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_index"):
            raise AttributeError(f"Policy is immutable: cannot set {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Policy is immutable: cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"<Policy {self.api_version} with {len(self.rules)} rules>"

    def evaluate(self, attrs: RequestAttributes) -> Evaluation:
        matchers = self._matchers
        for i in self._index.candidates(attrs):
            if matchers[i].matches(attrs):
                return self._hits[i]
        return self._miss
