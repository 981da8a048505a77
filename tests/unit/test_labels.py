"""Label selector normal forms agree with matching label sets one by one."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.labels import (
    NAMESPACE_NAME_LABEL,
    LabelSelector,
    Requirement,
    opens_every_pod,
    parse_selector_lenient,
    satisfiable_together,
    selects_every_namespace,
)

KEYS = ["app", "tier", NAMESPACE_NAME_LABEL]
VALUES = ["a", "b"]
FRESH = "a-value-no-selector-names"

requirement = st.one_of(
    st.builds(
        Requirement,
        st.sampled_from(KEYS),
        st.sampled_from(["In", "NotIn"]),
        st.frozensets(st.sampled_from(VALUES), min_size=1),
    ),
    st.builds(
        Requirement,
        st.sampled_from(KEYS),
        st.sampled_from(["Exists", "DoesNotExist"]),
        st.just(frozenset()),
    ),
)
selector = st.builds(lambda rs: LabelSelector(tuple(rs)), st.lists(requirement, max_size=3))
# Every label set up to renaming values no selector mentions: each key absent, a, b or fresh.
LABEL_SETS = [
    {k: v for k, v in zip(KEYS, combo, strict=True) if v is not None}
    for combo in itertools.product([None, *VALUES, FRESH], repeat=len(KEYS))
]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(selector, min_size=1, max_size=3))
def test_satisfiable_together_is_some_label_set_matching_all(
    selectors: list[LabelSelector],
) -> None:
    expected = any(all(s.matches(labels) for s in selectors) for labels in LABEL_SETS)
    assert satisfiable_together(*selectors) is expected


@settings(max_examples=300, deadline=None, derandomize=True)
@given(selector)
def test_normal_forms_are_the_empty_and_the_fresh_name_only_label_sets(
    chosen: LabelSelector,
) -> None:
    assert chosen.matches_empty is chosen.matches({})
    assert chosen.selects_every_namespace is chosen.matches({NAMESPACE_NAME_LABEL: FRESH})


def test_raw_selectors_read_null_as_absent_and_malformed_as_nothing() -> None:
    assert opens_every_pod(None)
    assert opens_every_pod({"matchLabels": None, "matchExpressions": None})
    assert opens_every_pod(
        {"matchExpressions": [{"key": "x", "operator": "DoesNotExist", "values": None}]}
    )
    assert not opens_every_pod({"matchLabels": {"app": "web"}})
    assert not opens_every_pod({"matchExpressions": [None]})
    assert not opens_every_pod("x")
    assert not selects_every_namespace(None)  # absent: the object's own namespace
    assert selects_every_namespace({})
    assert selects_every_namespace(
        {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "Exists"}]}
    )
    assert not selects_every_namespace({"matchLabels": {NAMESPACE_NAME_LABEL: "team"}})
    assert parse_selector_lenient({"matchLabels": {}, "unknown": 1}) == LabelSelector()
    assert (
        parse_selector_lenient({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
        is None
    )
