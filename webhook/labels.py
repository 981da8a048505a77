"""Kubernetes label selectors (`metav1.LabelSelector`): parsed once, matched many times.

Semantics follow apimachinery `pkg/apis/meta/v1/helpers.go` (LabelSelectorAsSelector) and
`pkg/labels/selector.go`: requirements are ANDed; an empty selector matches everything; `NotIn`
and `DoesNotExist` match objects that lack the key.

Normal forms answer the NetworkPolicy questions without enumerating label sets: a selector
"opens every pod" when the empty label set satisfies it (whoever creates a pod chooses its labels,
and any set of selectors that together cover every label set covers the empty one); it "selects
every namespace" when a namespace carrying only its `kubernetes.io/metadata.name` label, with a
name no selector mentions, satisfies it; selectors are "satisfiable together" when one label set
satisfies them all, decided key by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})

# The label every namespace carries, set by the API server and immutable (KEP-2161).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class SelectorError(ValueError):
    """A selector is malformed; args[0] is (field path relative to the selector, reason)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def matches_empty(self) -> bool:
        """The empty label set satisfies it: only NotIn and DoesNotExist requirements."""
        return all(r.operator in ("NotIn", "DoesNotExist") for r in self.requirements)

    @property
    def selects_every_namespace(self) -> bool:
        """A namespace with only its metadata.name label, and a name of its own, satisfies it."""
        return all(_fresh_namespace_satisfies(r) for r in self.requirements)


EVERYTHING = LabelSelector()


def _fresh_namespace_satisfies(requirement: Requirement) -> bool:
    if requirement.key != NAMESPACE_NAME_LABEL:
        return requirement.operator in ("NotIn", "DoesNotExist")
    # The key is present with a value no `In` or `NotIn` list names.
    return requirement.operator in ("NotIn", "Exists")


def satisfiable_together(*selectors: LabelSelector) -> bool:
    """One label set satisfies every selector (keys are independent; values are any strings)."""
    by_key: dict[str, list[Requirement]] = {}
    for selector in selectors:
        for requirement in selector.requirements:
            by_key.setdefault(requirement.key, []).append(requirement)
    return all(_satisfiable_key(requirements) for requirements in by_key.values())


def _satisfiable_key(requirements: list[Requirement]) -> bool:
    present = any(r.operator in ("In", "Exists") for r in requirements)
    absent = any(r.operator == "DoesNotExist" for r in requirements)
    if present and absent:
        return False
    allowed: frozenset[str] | None = None  # None: any value (a fresh one avoids every NotIn)
    for r in requirements:
        if r.operator == "In":
            allowed = r.values if allowed is None else allowed & r.values
    if allowed is None:
        return True
    excluded = frozenset().union(*(r.values for r in requirements if r.operator == "NotIn"))
    return bool(allowed - excluded)


def parse_selector(raw: object) -> LabelSelector:
    """Parse a LabelSelector from its JSON form; `None` or `{}` is the empty selector."""
    if raw is None:
        return EVERYTHING
    if not isinstance(raw, Mapping):
        raise SelectorError("", "must be an object with matchLabels and/or matchExpressions")
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise SelectorError(sorted(unknown)[0], "unknown field")
    requirements: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels", "must be a map of strings")
    for key, value in match_labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SelectorError(f"matchLabels.{key}", "must be a string")
        requirements.append(Requirement(key, "In", frozenset({value})))
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError("matchExpressions", "must be a list")
    for i, expr in enumerate(expressions):
        requirements.append(_parse_expression(expr, f"matchExpressions[{i}]"))
    return LabelSelector(tuple(requirements))


def _parse_expression(expr: object, path: str) -> Requirement:
    if not isinstance(expr, Mapping):
        raise SelectorError(path, "must be an object with key, operator and values")
    key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{path}.key", "must be a non-empty string")
    if operator not in OPERATORS:
        raise SelectorError(f"{path}.operator", "must be one of In, NotIn, Exists, DoesNotExist")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{path}.values", "must be a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise SelectorError(f"{path}.values", f"must be non-empty for operator {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f"{path}.values", f"must be empty for operator {operator}")
    return Requirement(key, str(operator), frozenset(values))


def parse_selector_lenient(raw: object) -> LabelSelector | None:
    """Parse a selector inside an object that was not validated; None when it is malformed.

    `null` anywhere reads as absent (as the API server decodes it) and unknown fields are
    ignored (as it drops them), so this agrees with `is_empty_selector` on what is empty.
    """
    if isinstance(raw, Mapping):
        raw = {k: raw[k] for k in ("matchLabels", "matchExpressions") if raw.get(k) is not None}
    try:
        return parse_selector(raw)
    except SelectorError:
        return None


def opens_every_pod(raw: object) -> bool:
    """The openings reading of a selector inside an object: the empty label set satisfies it.

    Absent or null: yes. Malformed: no (it selects nothing).
    """
    if raw is None:
        return True
    if isinstance(raw, Mapping) and raw.get("matchLabels"):
        return False  # a label to match (or a malformed value): no, whatever else it says
    selector = parse_selector_lenient(raw)
    return selector is not None and selector.matches_empty


def selects_every_namespace(raw: object) -> bool:
    """A namespaceSelector inside an object that a name-only namespace satisfies (see module)."""
    if raw is None:
        return False  # absent: the object's own namespace only
    if isinstance(raw, Mapping) and raw.get("matchLabels"):
        return False  # a label to match (or a malformed value): no, whatever else it says
    selector = parse_selector_lenient(raw)
    return selector is not None and selector.selects_every_namespace


def is_empty_selector(raw: object) -> bool:
    """True when a selector in an object selects everything, without validating the rest.

    An absent selector, `{}`, or one whose matchLabels and matchExpressions are both empty.
    """
    if raw is None:
        return True
    if not isinstance(raw, Mapping):
        return False
    return not raw.get("matchLabels") and not raw.get("matchExpressions")
