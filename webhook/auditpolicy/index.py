"""Which rules of a policy can possibly match a request, in rule order.

`RuleIndex.candidates` returns a superset of the matching rules, sorted, so evaluating only those
gives the same first match as scanning every rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Final, TypeAlias

from webhook.auditpolicy.model import GroupResources, PolicyRule, RequestAttributes

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


class RuleIndex:
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
