"""The kube-apiserver audit Policy (`audit.k8s.io/v1`): loaded, validated and evaluated as it does.

A `Policy` is immutable and holds only what kube-apiserver's validation accepts; `evaluate` is pure
and gives exactly kube-apiserver's answer: the first matching rule's level, omitted stages and
omitManagedFields, or level None with the policy-level values when no rule matches.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final, TypeAlias

import yaml

from webhook.errors import ConfigError


class Level(enum.IntEnum):
    """Audit levels in kube-apiserver's order: None < Metadata < Request < RequestResponse."""

    NONE = 0
    METADATA = 1
    REQUEST = 2
    REQUEST_RESPONSE = 3

    @property
    def wire(self) -> str:
        return _LEVEL_NAMES[self]

    @classmethod
    def parse(cls, text: str) -> Level:
        try:
            return cls(_LEVEL_NAMES.index(text))
        except ValueError:
            raise ValueError(
                f"unsupported level {text!r}: supported values: {_LEVELS_HINT}"
            ) from None


_LEVEL_NAMES: Final = ("None", "Metadata", "Request", "RequestResponse")
_LEVELS_HINT: Final = ", ".join(f'"{name}"' for name in _LEVEL_NAMES)
STAGES: Final = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
API_VERSIONS: Final = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What kube-apiserver's audit filter knows about a request (authorizer.Attributes)."""

    user: str | None  # None = unauthenticated (matches no users/userGroups rule)
    groups: tuple[str, ...] = ()
    verb: str = ""
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Evaluation:
    level: Level
    rule: int | None  # 0-based index of the matching rule, None when none matched
    omit_stages: frozenset[str]
    omit_managed_fields: bool


@dataclass(frozen=True, slots=True)
class GroupResources:
    group: str = ""  # "" = core group, "*" = every group (kube-apiserver >= 1.36)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule as written; `omit_stages` is the rule's own list, without the policy's."""

    level: Level
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool | None = None


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


# --- the index: which rules can possibly match, in rule order -------------------------------------

_ANY: Final = "*"
_CACHE_LIMIT: Final = 4096
_Key: TypeAlias = tuple[str, ...]


def _first_segment(resource: str) -> str:
    return resource.split("/", 1)[0]


def _options(rule: PolicyRule) -> list[list[_Key]]:
    """Ways to file a rule: for each field that constrains it, buckets covering all it can match.

    A resource pattern only matches a request whose resource starts with the pattern's first
    segment, unless that segment is "*" ("*", "*/scale"): resources file by (group, segment).
    """
    options: list[list[_Key]] = [[("all",)]]
    for family, values in (("user", rule.users), ("group", rule.user_groups), ("verb", rule.verbs)):
        if values:
            options.append([(family, value) for value in values])
    if rule.resources:
        options.append([key for gr in rule.resources for key in _group_keys(gr)])
    if rule.namespaces:
        options.append([("ns", namespace) for namespace in rule.namespaces])
    elif rule.non_resource_urls and not rule.resources:
        options.append([_url_key(url) for url in rule.non_resource_urls])
    return options


def _group_keys(gr: GroupResources) -> Iterator[_Key]:
    if not gr.resources:
        yield ("res", gr.group, _ANY)
    for segment in {_first_segment(res) for res in gr.resources}:
        if gr.resource_names:
            yield from (("name", gr.group, segment, name) for name in gr.resource_names)
        else:
            yield ("res", gr.group, segment)


def _url_key(url: str) -> _Key:
    if url == "*":
        return ("nonres",)
    return ("prefix", url.rstrip("*")) if url.endswith("*") else ("path", url)


def _weight(key: _Key) -> int:
    """How often a bucket is read, roughly: catch-alls and verbs by most requests."""
    if key[0] in ("all", "verb", "nonres"):
        return 4
    return 1 + key.count(_ANY)


def _request_keys(attrs: RequestAttributes, prefix_lengths: Sequence[int]) -> Iterator[_Key]:
    """The buckets holding every rule that can match the request."""
    yield ("all",)
    yield ("verb", attrs.verb)
    if attrs.user is not None:  # users/userGroups never match an unauthenticated request
        yield ("user", attrs.user)
        for group in attrs.groups:
            yield ("group", group)
    if attrs.resource_request:
        segment = _first_segment(attrs.resource)
        for group in (attrs.api_group, _ANY):
            for seg in (segment, _ANY):
                yield ("res", group, seg)
                yield ("name", group, seg, attrs.name)
        yield ("ns", attrs.namespace)
    else:
        path = attrs.path
        yield ("nonres",)
        yield ("path", path)
        for length in prefix_lengths:
            if length <= len(path):
                yield ("prefix", path[:length])


class _Index:
    """Candidate rules for a request, in rule order: a superset of those that match it.

    Each rule is filed under one of its options, the one whose buckets are least shared and least
    often read, so a request reads a few small buckets instead of scanning every rule.
    """

    def __init__(self, rules: Sequence[PolicyRule]) -> None:
        options = [_options(rule) for rule in rules]
        shared: dict[_Key, int] = {}
        for keys in chain.from_iterable(options):
            for key in keys:
                shared[key] = shared.get(key, 0) + 1
        buckets: dict[_Key, list[int]] = {}
        for i, rule_options in enumerate(options):
            chosen = min(rule_options, key=lambda keys: sum(shared[k] * _weight(k) for k in keys))
            for key in chosen:
                buckets.setdefault(key, []).append(i)
        self._buckets = {key: tuple(ids) for key, ids in buckets.items()}
        self._prefix_lengths = sorted({len(key[1]) for key in buckets if key[0] == "prefix"})
        self._cache: dict[tuple[_Key, ...], tuple[int, ...]] = {}

    def candidates(self, attrs: RequestAttributes) -> tuple[int, ...]:
        buckets = self._buckets
        keys = tuple(k for k in _request_keys(attrs, self._prefix_lengths) if k in buckets)
        found = self._cache.get(keys)
        if found is None:
            found = tuple(sorted(set(chain.from_iterable(buckets[key] for key in keys))))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[keys] = found
        return found


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
        self._index = _Index(self.rules)

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


def describe_rule(policy: Policy, index: int) -> str:
    """One line naming a rule and what it matches, for messages that quote it.

    e.g. "rule 0 (level Metadata; verbs create,update; resources apps/deployments)".
    """
    rule = policy.rules[index]
    parts = [f"level {rule.level.wire}"]
    for label, values in (
        ("users", rule.users),
        ("userGroups", rule.user_groups),
        ("verbs", rule.verbs),
        ("resources", tuple(_describe_group(gr) for gr in rule.resources)),
        ("namespaces", tuple(ns or '""' for ns in rule.namespaces)),
        ("nonResourceURLs", rule.non_resource_urls),
        ("omitStages", rule.omit_stages),
    ):
        if values:
            parts.append(f"{label} {_short_list(values)}")
    if len(parts) == 1:
        parts.append("every request")
    return f"rule {index} ({'; '.join(parts)})"


def _describe_group(gr: GroupResources) -> str:
    group = gr.group or "core"
    names = f"[{_short_list(gr.resource_names)}]" if gr.resource_names else ""
    return ",".join(f"{group}/{res}{names}" for res in gr.resources or ("*",))


def _short_list(values: Sequence[str], limit: int = 6) -> str:
    shown = ",".join(values[:limit])
    return f"{shown},+{len(values) - limit} more" if len(values) > limit else shown


# --- loading (k8s.io/apiserver pkg/audit/policy/reader.go, pkg/apis/audit/validation) -------------

_POLICY_FIELDS: Final = frozenset(
    {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
)
_RULE_FIELDS: Final = frozenset(
    {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs"}
    | {"omitStages", "omitManagedFields"}
)
_GROUP_FIELDS: Final = frozenset({"group", "resources", "resourceNames"})
_METADATA_FIELDS: Final = frozenset(
    {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation"}
    | {"creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels"}
    | {"annotations", "ownerReferences", "finalizers", "managedFields"}
)
# apimachinery IsDNS1123Subdomain, as NameIsDNSSubdomain applies it to group names.
_DNS1123_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_DNS1123_HINT: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.',"
    " and must start and end with an alphanumeric character (e.g. 'example.com')"
)


def _kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


class _Decoder:
    """Reads the JSON/YAML shape into plain values as apimachinery's strict decoder would.

    null is the zero value (Go's encoding/json); field names are case-sensitive; with `strict`
    unknown fields are errors, without it they are dropped (kube-apiserver's lenient fallback).
    """

    def __init__(self, source: str, strict: bool) -> None:
        self.source = source
        self.strict = strict

    def fail(self, path: str, reason: str) -> ConfigError:
        return ConfigError(self.source, path, reason)

    def mapping(self, value: object, path: str, fields: frozenset[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping, not {_kind_of(value)}")
        for key in value:
            if key not in fields and self.strict:
                raise self.fail(_join(path, str(key)), "unknown field")
        return value

    def string(self, value: object, path: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {_kind_of(value)}")
        return value

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        return tuple(
            self.string(item, f"{path}[{i}]") for i, item in enumerate(self.items(value, path))
        )

    def items(self, value: object, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list, not {_kind_of(value)}")
        return value

    def boolean(self, value: object, path: str) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(path, f"must be a boolean, not {_kind_of(value)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_policy(doc: object, source: str, *, strict: bool = True) -> Policy:
    """Build a Policy from decoded YAML/JSON; what kube-apiserver refuses raises ConfigError.

    `strict=False` drops unknown fields as kube-apiserver does after its strict decode fails.
    """
    dec = _Decoder(source, strict)
    if not isinstance(doc, Mapping):
        reason = "empty document" if doc is None else f"must be a mapping, not {_kind_of(doc)}"
        raise dec.fail("", f"not an audit Policy: {reason}")
    api_version = dec.string(doc.get("apiVersion"), "apiVersion")
    if api_version not in API_VERSIONS:
        shown = repr(api_version) if api_version else "missing"
        raise dec.fail("apiVersion", f"{shown}: an audit Policy has apiVersion audit.k8s.io/v1")
    kind = dec.string(doc.get("kind"), "kind")
    if kind != "Policy":
        raise dec.fail(
            "kind", f"{kind!r}: must be 'Policy'" if kind else "missing: must be 'Policy'"
        )
    dec.mapping(doc, "", _POLICY_FIELDS)
    dec.mapping(doc.get("metadata"), "metadata", _METADATA_FIELDS)
    omit_stages = _parse_stages(dec, doc.get("omitStages"), "omitStages")
    omit_managed_fields = bool(dec.boolean(doc.get("omitManagedFields"), "omitManagedFields"))
    raw_rules = dec.items(doc.get("rules"), "rules")
    rules = [_parse_rule(dec, raw, f"rules[{i}]") for i, raw in enumerate(raw_rules)]
    if not rules:
        # reader.go: "loaded illegal policy with 0 rules"
        raise dec.fail("rules", "at least one rule is required (kube-apiserver refuses 0 rules)")
    return Policy(rules, omit_stages, omit_managed_fields, api_version)


def _parse_stages(dec: _Decoder, value: object, path: str) -> tuple[str, ...]:
    stages = dec.strings(value, path)
    for i, stage in enumerate(stages):
        if stage not in STAGES:
            raise dec.fail(f"{path}[{i}]", f"{stage!r}: allowed stages are {','.join(STAGES)}")
    return stages


def _parse_rule(dec: _Decoder, raw: object, path: str) -> PolicyRule:
    m = dec.mapping(raw, path, _RULE_FIELDS)
    level_text = dec.string(m.get("level"), f"{path}.level")
    users = dec.strings(m.get("users"), f"{path}.users")
    user_groups = dec.strings(m.get("userGroups"), f"{path}.userGroups")
    verbs = dec.strings(m.get("verbs"), f"{path}.verbs")
    raw_groups = dec.items(m.get("resources"), f"{path}.resources")
    resources = tuple(
        _parse_group(dec, gr, f"{path}.resources[{i}]") for i, gr in enumerate(raw_groups)
    )
    namespaces = dec.strings(m.get("namespaces"), f"{path}.namespaces")
    urls = dec.strings(m.get("nonResourceURLs"), f"{path}.nonResourceURLs")
    omf = dec.boolean(m.get("omitManagedFields"), f"{path}.omitManagedFields")
    # Validated in validation.go's order: level, URLs, resources, omitStages, exclusivity.
    level = _parse_level(dec, level_text, f"{path}.level")
    _check_urls(dec, urls, f"{path}.nonResourceURLs")
    for i, gr in enumerate(resources):
        _check_group(dec, gr, f"{path}.resources[{i}]")
    omit_stages = _parse_stages(dec, m.get("omitStages"), f"{path}.omitStages")
    if urls and (resources or namespaces):
        raise dec.fail(
            f"{path}.nonResourceURLs",
            "rules cannot apply to both regular resources and non-resource URLs",
        )
    return PolicyRule(
        level, users, user_groups, verbs, resources, namespaces, urls, omit_stages, omf
    )


def _parse_group(dec: _Decoder, raw: object, path: str) -> GroupResources:
    m = dec.mapping(raw, path, _GROUP_FIELDS)
    return GroupResources(
        dec.string(m.get("group"), f"{path}.group"),
        dec.strings(m.get("resources"), f"{path}.resources"),
        dec.strings(m.get("resourceNames"), f"{path}.resourceNames"),
    )


def _parse_level(dec: _Decoder, text: str, path: str) -> Level:
    if not text:
        raise dec.fail(path, "Required value")
    try:
        return Level.parse(text)
    except ValueError as exc:
        raise dec.fail(path, str(exc)) from None


def _check_urls(dec: _Decoder, urls: tuple[str, ...], path: str) -> None:
    for i, url in enumerate(urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            raise dec.fail(f"{path}[{i}]", f"{url!r}: non-resource URL rules must begin with a '/'")
        if "*" in url[:-1]:
            raise dec.fail(
                f"{path}[{i}]",
                f"{url!r}: non-resource URL wildcards '*' must be the final character",
            )


def _check_group(dec: _Decoder, gr: GroupResources, path: str) -> None:
    group = gr.group
    if group not in ("", "*"):
        if len(group) > 253:
            raise dec.fail(f"{path}.group", "must be no more than 253 characters")
        if not _DNS1123_SUBDOMAIN.fullmatch(group):
            raise dec.fail(f"{path}.group", f"{group!r}: {_DNS1123_HINT}")
    if gr.resource_names and not gr.resources:
        raise dec.fail(
            f"{path}.resourceNames", "using resourceNames requires at least one resource"
        )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, as the strict decoder does."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                continue  # the decoder reports non-string keys as unknown fields
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate field {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_policy(text: str, source: str, *, strict: bool = True) -> Policy:
    """Parse audit Policy YAML (or JSON) text; `source` names the file in error messages."""
    loader = _StrictLoader if strict else yaml.SafeLoader
    try:
        docs = [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, where, f"invalid YAML: {problem}") from None
    if len(docs) > 1:
        raise ConfigError(source, "", "expected one YAML document, found several")
    return parse_policy(docs[0] if docs else None, source, strict=strict)
