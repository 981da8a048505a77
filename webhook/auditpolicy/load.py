"""Loading an audit Policy from YAML or JSON with kube-apiserver's decoding and validation.

What kube-apiserver refuses raises `ConfigError` naming the file and field; what it accepts becomes
a `Policy` equal to the one it would load. `describe_rule` quotes a rule in its wire field names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

from webhook.auditpolicy.model import API_VERSIONS, STAGES, GroupResources, Level, PolicyRule
from webhook.auditpolicy.policy import Policy
from webhook.errors import ConfigError

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


def describe_rule(policy: Policy, index: int) -> str:
    """One line naming a rule and what it matches, for messages that quote it.

    e.g. "rules[0] (level Metadata; verbs create,update; resources apps/deployments)": rules are
    numbered from 0 and written `rules[N]`, as kube-apiserver's own messages name them
    ("rules[2].level: Unsupported value") and as this loader's errors do.
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
    return f"rules[{index}] ({'; '.join(parts)})"


def _describe_group(gr: GroupResources) -> str:
    group = gr.group or "core"
    names = f"[{_short_list(gr.resource_names)}]" if gr.resource_names else ""
    return ",".join(f"{group}/{res}{names}" for res in gr.resources or ("*",))


def _short_list(values: Sequence[str], limit: int = 6) -> str:
    shown = ",".join(values[:limit])
    return f"{shown},+{len(values) - limit} more" if len(values) > limit else shown
