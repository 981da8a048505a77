"""Audit Policy evaluation and loading, against upstream kube-apiserver's own test tables.

Ported from k8s.io/apiserver v0.37: pkg/audit/policy/checker_test.go, reader_test.go and
pkg/apis/audit/validation/validation_test.go; then kubefence's edge cases and properties.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.auditpolicy import (
    STAGES,
    Evaluation,
    GroupResources,
    Level,
    Policy,
    PolicyRule,
    RequestAttributes,
    describe_rule,
    load_policy,
    parse_policy,
)
from webhook.errors import ConfigError

V1 = "audit.k8s.io/v1"


def policy_doc(*rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Policy", "rules": list(rules), **fields}


def make(*rules: dict[str, Any], **fields: Any) -> Policy:
    return parse_policy(policy_doc(*rules, **fields), "policy.yaml")


def config_error(doc: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_policy(doc, "policy.yaml")
    return info.value


# --- checker_test.go -----------------------------------------------------------------------------

TIM = "tim@k8s.io"
TIM_GROUPS = ("humans", "developers")

POD_PATH = "/api/v1/namespaces/default/pods/busybox"
RBAC = "rbac.authorization.k8s.io"
ATTRS: dict[str, RequestAttributes] = {
    "namespaced": RequestAttributes(
        TIM,
        TIM_GROUPS,
        verb="get",
        namespace="default",
        api_version="v1",
        resource="pods",
        name="busybox",
        path=POD_PATH,
    ),
    "cluster": RequestAttributes(
        TIM,
        TIM_GROUPS,
        verb="get",
        api_group=RBAC,
        api_version="v1beta1",
        resource="clusterroles",
        name="edit",
        path=f"/apis/{RBAC}/v1beta1/clusterroles/edit",
    ),
    "nonResource": RequestAttributes(
        TIM, TIM_GROUPS, verb="get", resource_request=False, path="/logs/kubelet.log"
    ),
    "subresource": RequestAttributes(
        TIM,
        TIM_GROUPS,
        verb="get",
        namespace="default",
        api_version="v1",
        resource="pods",
        subresource="log",
        name="busybox",
        path=POD_PATH,
    ),
    "Unauthorized": RequestAttributes(
        None,
        verb="get",
        namespace="default",
        api_version="v1",
        resource="pods",
        name="busybox",
        path=POD_PATH,
    ),
    "ClusterRoleUpdate": RequestAttributes(
        TIM,
        TIM_GROUPS,
        verb="update",
        api_group=RBAC,
        api_version="v1beta1",
        resource="clusterroles",
        subresource="status",
        name="somerole",
        path=f"/apis/{RBAC}/v1beta1/clusterroles/somerole",
    ),
}


def get(*resources: str) -> dict[str, Any]:
    return {"verbs": ["get"], "resources": [{"resources": list(resources)}]}


RULES: dict[str, dict[str, Any]] = {
    "default": {"level": "Metadata"},
    "create": {"level": "Request", "verbs": ["create"]},
    "tims": {"level": "Metadata", "users": [TIM]},
    "humans": {"level": "Metadata", "userGroups": ["humans"]},
    "serviceAccounts": {"level": "Request", "userGroups": ["system:serviceaccounts"]},
    "getPods": {"level": "RequestResponse", **get("pods")},
    "getPodLogs": {"level": "Request", **get("pods/log")},
    "getPodWildcardMatching": {"level": "Request", **get("*")},
    "getPodResourceWildcardMatching": {"level": "Request", **get("*/log")},
    "getPodSubResourceWildcardMatching": {"level": "Request", **get("pods/*")},
    "getClusterRoles": {
        "level": "RequestResponse",
        "verbs": ["get"],
        "resources": [{"group": RBAC, "resources": ["clusterroles"]}],
        "namespaces": [""],
    },
    "getGroupWildCardMatchingWithSubresourceWildcardMatching": {
        "level": "RequestResponse",
        "verbs": ["update"],
        "resources": [{"group": "*", "resources": ["*/status"]}],
    },
    "getLogs": {"level": "RequestResponse", "verbs": ["get"], "nonResourceURLs": ["/logs*"]},
    "getMetrics": {"level": "Request", "verbs": ["get"], "nonResourceURLs": ["/metrics"]},
    "clusterRoleEdit": {
        "level": "Request",
        "resources": [{"group": RBAC, "resources": ["clusterroles"], "resourceNames": ["edit"]}],
    },
    "omit RequestReceived": {"level": "Request", "omitStages": ["RequestReceived"]},
    "only audit panic": {
        "level": "Request",
        "omitStages": ["RequestReceived", "ResponseStarted", "ResponseComplete"],
    },
}

N, M, R, RR = Level.NONE, Level.METADATA, Level.REQUEST, Level.REQUEST_RESPONSE

# testAuditLevel: (request, expected level, rule names in order)
LEVEL_CASES: list[tuple[str, Level, tuple[str, ...]]] = [
    ("namespaced", M, ("default",)),
    ("namespaced", N, ("create",)),
    ("namespaced", M, ("tims",)),
    ("namespaced", M, ("humans",)),
    ("namespaced", N, ("serviceAccounts",)),
    ("namespaced", RR, ("getPods",)),
    ("namespaced", N, ("getClusterRoles",)),
    ("namespaced", N, ("getLogs",)),
    ("namespaced", N, ("getMetrics",)),
    ("namespaced", M, ("getMetrics", "serviceAccounts", "default")),
    ("namespaced", RR, ("getMetrics", "getPods", "default")),
    ("namespaced", RR, ("getPodLogs", "getPods")),
    ("cluster", M, ("default",)),
    ("cluster", N, ("create",)),
    ("cluster", M, ("tims",)),
    ("cluster", M, ("humans",)),
    ("cluster", N, ("serviceAccounts",)),
    ("cluster", N, ("getPods",)),
    ("cluster", RR, ("getClusterRoles",)),
    ("cluster", R, ("clusterRoleEdit", "getClusterRoles")),
    ("cluster", N, ("getLogs",)),
    ("cluster", N, ("getMetrics",)),
    ("cluster", M, ("getMetrics", "serviceAccounts", "default")),
    ("cluster", RR, ("getMetrics", "getClusterRoles", "default")),
    ("cluster", N, ("getPodLogs", "getPods")),
    ("nonResource", M, ("default",)),
    ("nonResource", N, ("create",)),
    ("nonResource", M, ("tims",)),
    ("nonResource", M, ("humans",)),
    ("nonResource", N, ("serviceAccounts",)),
    ("nonResource", N, ("getPods",)),
    ("nonResource", N, ("getClusterRoles",)),
    ("nonResource", RR, ("getLogs",)),
    ("nonResource", N, ("getMetrics",)),
    ("nonResource", M, ("getMetrics", "serviceAccounts", "default")),
    ("nonResource", RR, ("getLogs", "getClusterRoles", "default")),
    ("nonResource", N, ("getPodLogs", "getPods")),
    ("subresource", R, ("getPodLogs", "getPods")),
    ("subresource", R, ("getPodWildcardMatching",)),
    ("subresource", R, ("getPodResourceWildcardMatching",)),
    ("subresource", R, ("getPodSubResourceWildcardMatching",)),
    ("Unauthorized", N, ("tims",)),
    ("Unauthorized", M, ("tims", "default")),
    ("Unauthorized", N, ("humans",)),
    ("Unauthorized", M, ("humans", "default")),
    ("ClusterRoleUpdate", RR, ("getGroupWildCardMatchingWithSubresourceWildcardMatching",)),
]

# TestChecker (policy omitStages nil) and TestCheckerPolicyOmitStages: (policy stages, request,
# level, expected omitted stages, rules)
RR_RS = ("RequestReceived", "ResponseStarted")
RR_RS_RC = ("RequestReceived", "ResponseStarted", "ResponseComplete")
STAGE_CASES: list[tuple[tuple[str, ...], str, Level, tuple[str, ...], tuple[str, ...]]] = [
    ((), "namespaced", R, ("RequestReceived",), ("omit RequestReceived", "getPods", "default")),
    ((), "namespaced", R, RR_RS_RC, ("only audit panic", "getPods", "default")),
    ((), "cluster", R, ("RequestReceived",), ("omit RequestReceived", "getPods", "default")),
    ((), "cluster", R, RR_RS_RC, ("only audit panic", "getPods", "default")),
    ((), "nonResource", R, ("RequestReceived",), ("omit RequestReceived", "getPods", "default")),
    ((), "nonResource", R, RR_RS_RC, ("only audit panic", "getPods", "default")),
    (RR_RS, "namespaced", R, RR_RS, ("omit RequestReceived", "getPods", "default")),
    (RR_RS, "namespaced", R, RR_RS_RC, ("only audit panic", "getPods", "default")),
    (RR_RS, "cluster", R, RR_RS, ("omit RequestReceived", "getPods", "default")),
    (RR_RS, "cluster", R, RR_RS_RC, ("only audit panic", "getPods", "default")),
    (RR_RS, "nonResource", M, RR_RS, ("default", "omit RequestReceived", "getPods")),
    (RR_RS, "nonResource", R, RR_RS_RC, ("only audit panic", "getPods", "default")),
]


def checker_policy(names: tuple[str, ...], stages: tuple[str, ...]) -> Policy:
    return make(*(RULES[name] for name in names), omitStages=list(stages))


@pytest.mark.parametrize("policy_stages", [(), RR_RS], ids=["no-policy-stages", "policy-stages"])
@pytest.mark.parametrize(("request_name", "level", "names"), LEVEL_CASES)
def test_checker_levels(
    request_name: str, level: Level, names: tuple[str, ...], policy_stages: tuple[str, ...]
) -> None:
    result = checker_policy(names, policy_stages).evaluate(ATTRS[request_name])
    assert result.level == level
    assert result.omit_stages == frozenset(policy_stages)


@pytest.mark.parametrize(("policy_stages", "request_name", "level", "stages", "names"), STAGE_CASES)
def test_checker_omit_stages(
    policy_stages: tuple[str, ...],
    request_name: str,
    level: Level,
    stages: tuple[str, ...],
    names: tuple[str, ...],
) -> None:
    result = checker_policy(names, policy_stages).evaluate(ATTRS[request_name])
    assert (result.level, result.omit_stages) == (level, frozenset(stages))


# TestUnionStages, seen through a matching rule: the union of policy and rule stages.
@pytest.mark.parametrize(
    ("policy_stages", "rule_stages", "expected"),
    [
        ((), (), ()),
        (("RequestReceived",), (), ("RequestReceived",)),
        (("RequestReceived",), ("RequestReceived",), ("RequestReceived",)),
        (("RequestReceived",), ("ResponseStarted",), RR_RS),
        (("RequestReceived",) * 2, ("RequestReceived",) * 2, ("RequestReceived",)),
        (RR_RS, ("Panic", "RequestReceived"), (*RR_RS, "Panic")),
        ((), ("RequestReceived",), ("RequestReceived",)),
    ],
)
def test_union_stages(
    policy_stages: tuple[str, ...], rule_stages: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    policy = make(
        {"level": "Metadata", "omitStages": list(rule_stages)}, omitStages=list(policy_stages)
    )
    assert policy.evaluate(ATTRS["namespaced"]).omit_stages == frozenset(expected)


# TestOmitManagedFields: (policy default, rule override, expected)
@pytest.mark.parametrize(
    ("policy_default", "rule_value", "expected"),
    [(False, None, False), (True, None, True), (True, False, False), (False, True, True)],
)
def test_omit_managed_fields(policy_default: bool, rule_value: bool | None, expected: bool) -> None:
    rule: dict[str, Any] = {"level": "RequestResponse", "verbs": ["get"]}
    if rule_value is not None:
        rule["omitManagedFields"] = rule_value
    policy = make(rule, omitManagedFields=policy_default)
    assert policy.evaluate(RequestAttributes(None, verb="get")).omit_managed_fields is expected


def test_omit_managed_fields_without_match_is_the_policy_default() -> None:
    policy = make(
        {"level": "Metadata", "verbs": ["get"], "omitManagedFields": False}, omitManagedFields=True
    )
    assert policy.evaluate(RequestAttributes(None, verb="list")) == Evaluation(
        Level.NONE, None, frozenset(), True
    )


# --- validation_test.go --------------------------------------------------------------------------

VALID_RULES: list[dict[str, Any]] = [
    {"level": "Metadata"},
    {"level": "None", "userGroups": ["system:serviceaccounts", "system:nodes"]},
    {
        "level": "RequestResponse",
        "verbs": ["get"],
        "resources": [
            {"group": "rbac.authorization.k8s.io", "resources": ["roles", "rolebindings"]}
        ],
        "namespaces": ["kube-system"],
    },
    {
        "level": "Metadata",
        "userGroups": ["developers"],
        "nonResourceURLs": ["/logs*", "/healthz*", "/metrics", "*"],
    },
    {"level": "Metadata", "omitStages": ["RequestReceived"]},
]


@pytest.mark.parametrize("rule", VALID_RULES)
def test_valid_rule(rule: dict[str, Any]) -> None:
    assert len(make(rule)) == 1


def test_valid_policies() -> None:
    assert len(make(*VALID_RULES)) == len(VALID_RULES)
    policy = make({"level": "Metadata"}, omitStages=["RequestReceived"])
    assert policy.omit_stages == frozenset({"RequestReceived"})


@pytest.mark.parametrize(
    "doc",
    [
        policy_doc(),  # ValidatePolicy accepts it, but reader.go refuses a policy with 0 rules
        policy_doc(omitStages=["RequestReceived"]),
        {"apiVersion": V1, "kind": "Policy"},
    ],
)
def test_policy_without_rules_is_refused(doc: dict[str, Any]) -> None:
    err = config_error(doc)
    assert (err.source, err.path) == ("policy.yaml", "rules")


META: dict[str, Any] = {"level": "Metadata"}
INVALID_RULES: list[tuple[dict[str, Any], str]] = [
    ({}, "rules[0].level"),
    ({**get("secrets"), "namespaces": ["kube-system"]}, "rules[0].level"),
    ({"level": "FooBar"}, "rules[0].level"),
    (
        {**META, "namespaces": ["default"], "nonResourceURLs": ["/logs*"]},
        "rules[0].nonResourceURLs",
    ),
    ({**META, **get("secrets"), "nonResourceURLs": ["/logs*"]}, "rules[0].nonResourceURLs"),
    (
        {**META, "resources": [{"group": f"{RBAC}/v1beta1", "resources": ["roles"]}]},
        "rules[0].resources[0].group",
    ),
    ({**META, "nonResourceURLs": ["logs", "/healthz*"]}, "rules[0].nonResourceURLs[0]"),
    ({**META, "nonResourceURLs": ["", "/healthz*"]}, "rules[0].nonResourceURLs[0]"),
    ({**META, "nonResourceURLs": ["/logs/*/*", "/metrics"]}, "rules[0].nonResourceURLs[0]"),
    ({**META, "nonResourceURLs": ["/logs/*.log", "/metrics"]}, "rules[0].nonResourceURLs[0]"),
    (
        {
            **META,
            "verbs": ["get"],
            "resources": [{"resourceNames": ["leader"]}],
            "namespaces": ["kube-system"],
        },
        "rules[0].resources[0].resourceNames",
    ),
    ({**META, "omitStages": ["foo"]}, "rules[0].omitStages[0]"),
]


@pytest.mark.parametrize(("rule", "path"), INVALID_RULES)
def test_invalid_rule(rule: dict[str, Any], path: str) -> None:
    assert config_error(policy_doc(rule)).path == path


def test_invalid_rule_after_valid_ones() -> None:
    assert config_error(policy_doc(*VALID_RULES, {})).path == f"rules[{len(VALID_RULES)}].level"


def test_invalid_policy_omit_stages() -> None:
    err = config_error(policy_doc({"level": "Metadata"}, omitStages=["foo"]))
    assert str(err) == (
        "policy.yaml: omitStages[0]: 'foo': allowed stages are "
        "RequestReceived,ResponseStarted,ResponseComplete,Panic"
    )


# --- reader_test.go ------------------------------------------------------------------------------

POLICY_PATTERN = """
apiVersion: audit.k8s.io/{version}
kind: Policy
rules:
  - level: None
    nonResourceURLs:
      - /healthz*
      - /version
  - level: RequestResponse
    users: ["tim"]
    userGroups: ["testers", "developers"]
    verbs: ["patch", "delete", "create"]
    resources:
      - group: ""
      - group: "rbac.authorization.k8s.io"
        resources: ["clusterroles", "clusterrolebindings"]
    namespaces: ["default", "kube-system"]
  - level: Metadata
"""

EXPECTED_RULES = (
    PolicyRule(Level.NONE, non_resource_urls=("/healthz*", "/version")),
    PolicyRule(
        Level.REQUEST_RESPONSE,
        users=("tim",),
        user_groups=("testers", "developers"),
        verbs=("patch", "delete", "create"),
        resources=(
            GroupResources(),
            GroupResources("rbac.authorization.k8s.io", ("clusterroles", "clusterrolebindings")),
        ),
        namespaces=("default", "kube-system"),
    ),
    PolicyRule(Level.METADATA),
)


# v1beta1 was removed from kube-apiserver in 1.24; kubefence still reads old files.
@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_parser(version: str) -> None:
    policy = load_policy(POLICY_PATTERN.format(version=version), "policy.yaml")
    assert policy.rules == EXPECTED_RULES
    assert policy.api_version == f"audit.k8s.io/{version}"


def test_policy_without_version_or_kind() -> None:
    text = POLICY_PATTERN.split("\n", 3)[3]  # from "rules:" on
    with pytest.raises(ConfigError, match=r"^policy.yaml: apiVersion: missing"):
        load_policy(text, "policy.yaml")


UNKNOWN_FIELD = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  resources:
  - group: coordination.k8s.io
    resources:
    - "leases"
    verbs: ["watch", "get", "list"] # invalid indentation on verbs
"""


def test_unknown_field_is_refused_when_strict() -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(UNKNOWN_FIELD, "policy.yaml")
    assert str(info.value) == "policy.yaml: rules[0].resources[0].verbs: unknown field"


def test_unknown_field_is_dropped_when_lenient_as_kube_apiserver_does() -> None:
    policy = load_policy(UNKNOWN_FIELD, "policy.yaml", strict=False)
    lease = RequestAttributes(
        "u", verb="delete", api_group="coordination.k8s.io", resource="leases"
    )
    assert policy.evaluate(lease).rule == 0  # the misplaced verbs did not restrict the rule


@pytest.mark.parametrize("text", ["apiVersion: audit.k8s.io/v1\nkind: Policy", "", "\n---\n"])
def test_policy_count_check(text: str) -> None:
    with pytest.raises(ConfigError):
        load_policy(text, "policy.yaml")


# --- kubefence: matching edge cases --------------------------------------------------------------


def res(
    resource: str,
    sub: str = "",
    *,
    group: str = "",
    ns: str = "default",
    name: str = "x",
    verb: str = "get",
    user: str | None = "alice",
    groups: tuple[str, ...] = ("system:authenticated",),
) -> RequestAttributes:
    return RequestAttributes(
        user, groups, verb, True, group, "v1", resource, sub, ns, name, f"/{resource}"
    )


def nonres(path: str, verb: str = "get", user: str | None = "alice") -> RequestAttributes:
    return RequestAttributes(
        user, ("system:authenticated",), verb, resource_request=False, path=path
    )


def matches(rule: dict[str, Any], attrs: RequestAttributes) -> bool:
    return make({"level": "Metadata", **rule}).evaluate(attrs).rule == 0


RESOURCE_CASES: list[tuple[list[str], RequestAttributes, bool]] = [
    (["pods"], res("pods"), True),
    (["pods"], res("pods", "log"), False),
    (["pods/log"], res("pods", "log"), True),
    (["pods/log"], res("pods"), False),
    (["pods/*"], res("pods", "exec"), True),
    (["pods/*"], res("pods"), True),  # checker.go compares only the resource for "resource/*"
    (["pods/*"], res("podsx"), False),
    (["*"], res("pods", "log"), True),
    (["*"], res("secrets"), True),
    (["*/scale"], res("deployments", "scale"), True),
    (["*/scale"], res("scale"), False),  # "*/sub" needs a subresource
    (["*/scale"], res("deployments", "status"), False),
    (["*/*"], res("pods", "log"), False),  # neither "*/x" nor "x/*" form: only literal "*/*"
    (["deployments/scale"], res("deployments", "scale", group="apps"), False),  # group ""
]


@pytest.mark.parametrize(("patterns", "attrs", "expected"), RESOURCE_CASES)
def test_resource_patterns(patterns: list[str], attrs: RequestAttributes, expected: bool) -> None:
    assert matches({"resources": [{"resources": patterns}]}, attrs) is expected


@pytest.mark.parametrize(
    ("group", "attrs", "expected"),
    [
        ("apps", res("deployments", group="apps"), True),
        ("apps", res("pods"), False),
        ("", res("deployments", group="apps"), False),
        ("*", res("deployments", "scale", group="apps"), True),
        ("*", res("pods"), True),
    ],
)
def test_groups_without_resources_match_every_resource(
    group: str, attrs: RequestAttributes, expected: bool
) -> None:
    assert matches({"resources": [{"group": group}]}, attrs) is expected


@pytest.mark.parametrize(
    ("names", "attrs", "expected"),
    [
        (["cm1"], res("configmaps", name="cm1"), True),
        (["cm1"], res("configmaps", name="cm2"), False),
        (["cm1"], res("configmaps", name=""), False),  # create, list: no name
        ([""], res("configmaps", name=""), True),  # upstream does not forbid "" in resourceNames
    ],
)
def test_resource_names(names: list[str], attrs: RequestAttributes, expected: bool) -> None:
    rule = {"resources": [{"resources": ["configmaps"], "resourceNames": names}]}
    assert matches(rule, attrs) is expected


@pytest.mark.parametrize(
    ("namespaces", "attrs", "expected"),
    [
        ([""], res("nodes", ns=""), True),
        ([""], res("pods", ns=""), True),  # a list across all namespaces has namespace ""
        ([""], res("pods", ns="default"), False),
        (["default"], res("pods"), True),
        (["default"], nonres("/healthz"), False),
    ],
)
def test_namespaces(namespaces: list[str], attrs: RequestAttributes, expected: bool) -> None:
    assert matches({"namespaces": namespaces}, attrs) is expected


@pytest.mark.parametrize(
    ("urls", "attrs", "expected"),
    [
        (["/healthz*"], nonres("/healthz"), True),
        (["/healthz*"], nonres("/healthzx"), True),
        (["/healthz*"], nonres("/healthz/ready"), True),
        (["/api/*"], nonres("/api"), False),
        (["/metrics"], nonres("/metrics"), True),
        (["/metrics"], nonres("/metrics/slis"), False),
        (["*"], nonres("/anything"), True),
        (["/*"], nonres("/"), True),
        (["*"], res("pods"), False),  # a non-resource rule never matches a resource request
    ],
)
def test_non_resource_urls(urls: list[str], attrs: RequestAttributes, expected: bool) -> None:
    assert matches({"nonResourceURLs": urls}, attrs) is expected


@pytest.mark.parametrize(
    ("rule", "attrs", "expected"),
    [
        ({"users": ["alice"]}, res("pods"), True),
        ({"users": ["alice"]}, res("pods", user="bob"), False),
        ({"users": ["alice"]}, res("pods", user=None), False),
        ({"userGroups": ["system:authenticated"]}, res("pods"), True),
        ({"userGroups": ["system:authenticated"]}, res("pods", user=None), False),
        ({"userGroups": ["ops"]}, res("pods", groups=("dev", "ops")), True),
        ({"users": ["alice"], "userGroups": ["ops"]}, res("pods"), False),  # both must match
        ({"verbs": ["get", "list"]}, res("pods", verb="list"), True),
        ({"verbs": ["get", "list"]}, res("pods", verb="watch"), False),
        # An OPTIONS request (a proxy's) is recorded with verb "": checker.go's hasString
        # matches it only in a rule without verbs, or one that lists "".
        ({"verbs": ["get", "create", "update", "patch", "delete"]}, res("pods", verb=""), False),
        ({"verbs": [""]}, res("pods", "proxy", verb=""), True),
        ({"verbs": [""]}, res("pods", "proxy", verb="get"), False),
        ({"resources": [{"resources": ["pods/proxy"]}]}, res("pods", "proxy", verb=""), True),
        ({}, nonres("/version"), True),  # a rule with no conditions matches everything
        ({}, res("pods", user=None, ns=""), True),
    ],
)
def test_subjects_and_verbs(rule: dict[str, Any], attrs: RequestAttributes, expected: bool) -> None:
    assert matches(rule, attrs) is expected


@pytest.mark.parametrize(
    ("attrs", "as_written", "swapped"),
    [
        (res("deployments", group="apps"), 0, 0),
        (res("pods"), 1, 0),
        (res("pods", ns="other"), 3, 3),
        (res("deployments", group="apps", ns="other"), 0, 1),
        (res("pods", "exec", ns="other"), 2, 2),
        (res("pods", "exec"), 1, 0),
        (nonres("/healthz"), 3, 3),
    ],
)
def test_first_matching_rule_wins_across_index_buckets(
    attrs: RequestAttributes, as_written: int, swapped: int
) -> None:
    by_group: dict[str, Any] = {
        "level": "Request",
        "resources": [{"group": "apps", "resources": ["deployments"]}],
    }
    by_namespace: dict[str, Any] = {"level": "None", "namespaces": ["default"]}
    by_subresource: dict[str, Any] = {
        "level": "RequestResponse",
        "resources": [{"group": "*", "resources": ["*/exec"]}],
    }
    catch_all: dict[str, Any] = {"level": "Metadata"}
    policy = make(by_group, by_namespace, by_subresource, catch_all)
    assert policy.evaluate(attrs).rule == as_written
    policy = make(by_namespace, by_group, by_subresource, catch_all)
    assert policy.evaluate(attrs).rule == swapped


def test_evaluation_carries_level_rule_and_stages() -> None:
    policy = make(
        {"level": "None", "users": ["system:kube-proxy"]},
        {"level": "Request", "verbs": ["create"], "omitStages": ["Panic"]},
        omitStages=["RequestReceived"],
        omitManagedFields=True,
    )
    assert policy.evaluate(res("pods", verb="create")) == Evaluation(
        Level.REQUEST, 1, frozenset({"RequestReceived", "Panic"}), True
    )
    assert policy.evaluate(res("pods")) == Evaluation(
        Level.NONE, None, frozenset({"RequestReceived"}), True
    )


def test_policy_is_immutable() -> None:
    policy = make({"level": "Metadata"})
    with pytest.raises(AttributeError):
        policy.rules = ()
    with pytest.raises(AttributeError):
        policy.omit_managed_fields = True
    with pytest.raises(AttributeError):
        del policy.omit_stages


def test_level_wire_names_and_order() -> None:
    assert [level.wire for level in Level] == ["None", "Metadata", "Request", "RequestResponse"]
    assert [Level.parse(level.wire) for level in Level] == list(Level)
    assert Level.NONE < Level.METADATA < Level.REQUEST < Level.REQUEST_RESPONSE
    with pytest.raises(ValueError, match="unsupported level 'metadata'"):
        Level.parse("metadata")


def test_describe_rule() -> None:
    policy = make(
        {
            "level": "Metadata",
            "verbs": ["create", "update", "delete"],
            "resources": [{"group": "apps", "resources": ["deployments"]}],
        },
        {
            "level": "None",
            "users": ["system:kube-proxy"],
            "resources": [
                {"group": "", "resources": ["endpoints", "pods/log"]},
                {"group": "batch"},
                {"resources": ["configmaps"], "resourceNames": ["a", "b"]},
            ],
            "namespaces": ["", "kube-system"],
            "omitStages": ["RequestReceived"],
        },
        {
            "level": "Request",
            "userGroups": ["ops"],
            "nonResourceURLs": [f"/p{i}" for i in range(8)],
        },
        {"level": "RequestResponse"},
    )
    assert [describe_rule(policy, i) for i in range(len(policy))] == [
        "rules[0] (level Metadata; verbs create,update,delete; resources apps/deployments)",
        "rules[1] (level None; users system:kube-proxy; resources core/endpoints,core/pods/log,"
        'batch/*,core/configmaps[a,b]; namespaces "",kube-system; omitStages RequestReceived)',
        "rules[2] (level Request; userGroups ops; nonResourceURLs /p0,/p1,/p2,/p3,/p4,/p5,+2 more)",
        "rules[3] (level RequestResponse; every request)",
    ]


# --- kubefence: loading --------------------------------------------------------------------------


NONE: dict[str, Any] = {"level": "None"}
MALFORMED: list[tuple[object, str]] = [
    (None, ": not an audit Policy: empty document"),
    ([], ": not an audit Policy: must be a mapping, not list"),
    ({"apiVersion": "audit.k8s.io/v2", "kind": "Policy"}, ": apiVersion: 'audit.k8s.io/v2'"),
    ({"apiVersion": V1, "kind": "PolicyList"}, ": kind: 'PolicyList'"),
    ({"apiVersion": V1}, ": kind: missing"),
    ({**policy_doc(NONE), "Rules": []}, ": Rules: unknown field"),
    ({**policy_doc(NONE), "metadata": {"nmae": "x"}}, ": metadata.nmae: unknown field"),
    (policy_doc({**NONE, "verb": ["get"]}), ": rules[0].verb: unknown field"),
    (policy_doc({"level": 1}), ": rules[0].level: must be a string, not number"),
    (policy_doc({**NONE, "users": "tim"}), ": rules[0].users: must be a list, not str"),
    (policy_doc({**NONE, "users": ["tim", True]}), ": rules[0].users[1]: must be a string"),
    (policy_doc({**NONE, "omitManagedFields": "yes"}), ": rules[0].omitManagedFields: must be a"),
    (policy_doc({**NONE, "resources": ["pods"]}), ": rules[0].resources[0]: must be a mapping"),
    ({**policy_doc(), "rules": ["None"]}, ": rules[0]: must be a mapping, not str"),
    ({**policy_doc(), "rules": [None]}, ": rules[0].level: Required value"),
    ({**policy_doc(), "rules": {"level": "None"}}, ": rules: must be a list, not mapping"),
    (policy_doc(NONE, omitManagedFields=1), ": omitManagedFields: must be a boolean, not number"),
    (
        policy_doc({**NONE, "resources": [{"group": "Apps"}]}),
        ": rules[0].resources[0].group: 'Apps': a lowercase RFC 1123 subdomain",
    ),
    (
        policy_doc({**NONE, "resources": [{"group": "a" * 254}]}),
        ": rules[0].resources[0].group: must be no more than 253 characters",
    ),
    (
        policy_doc({**NONE, "nonResourceURLs": ["/a**"]}),
        ": rules[0].nonResourceURLs[0]: '/a**': non-resource URL wildcards '*' must be the final",
    ),
]


@pytest.mark.parametrize(("doc", "message"), MALFORMED)
def test_malformed_documents(doc: object, message: str) -> None:
    assert str(config_error(doc)).startswith("policy.yaml" + message)


def test_nulls_are_zero_values_as_in_go() -> None:
    policy = make(
        {"level": "Metadata", "users": None, "resources": [{"group": None, "resources": ["pods"]}]},
        omitStages=None,
        omitManagedFields=None,
        metadata=None,
    )
    assert policy.rules == (PolicyRule(Level.METADATA, resources=(GroupResources("", ("pods",)),)),)
    assert policy.evaluate(res("pods")).rule == 0


def test_group_names_that_validation_accepts() -> None:
    groups = ["rbac.authorization.k8s.io", "*", "", "a-b.c1"]
    policy = make({"level": "None", "resources": [{"group": g} for g in groups]})
    assert tuple(gr.group for gr in policy.rules[0].resources) == tuple(groups)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "policy.yaml: line 1: invalid YAML"),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nkind: Policy\n",
            "policy.yaml: line 3: invalid YAML: duplicate field 'kind'",
        ),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None}]\n---\nkind: X\n",
            "policy.yaml: expected one YAML document",
        ),
    ],
)
def test_yaml_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(text, "policy.yaml")
    assert str(info.value).startswith(message)


def test_duplicate_fields_are_allowed_when_lenient() -> None:
    text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, level: Request}]\n"
    assert load_policy(text, "p", strict=False).rules[0].level is Level.REQUEST


def test_json_policy_loads() -> None:
    text = '{"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Request"}]}'
    assert load_policy(text, "policy.json").evaluate(nonres("/x")).level is Level.REQUEST


# --- properties ----------------------------------------------------------------------------------

API_GROUPS = ["", "apps", "*"]
PATTERNS = ["pods", "pods/log", "pods/*", "*", "*/log", "*/scale", "deployments", "/*", "*/*"]
NAMES = ["", "a", "b"]
NAMESPACES = ["", "default", "kube-system"]
URLS = ["*", "/healthz*", "/api", "/api/*", "/", "/*", "/h*", "/healthz"]
VERBS = ["get", "list", "create"]
USERS = ["tim", "bob"]
GROUPS = ["dev", "ops"]


def subset(values: list[str]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(values), max_size=2).map(tuple)


group_resources = st.builds(
    GroupResources,
    group=st.sampled_from(API_GROUPS),
    resources=subset(PATTERNS),
    resource_names=subset(NAMES),
)
rules = st.builds(
    PolicyRule,
    level=st.sampled_from(list(Level)),
    users=subset(USERS),
    user_groups=subset(GROUPS),
    verbs=subset(VERBS),
    resources=st.lists(group_resources, max_size=2).map(tuple),
    namespaces=subset(NAMESPACES),
    non_resource_urls=subset(URLS),
    omit_stages=subset(list(STAGES)),
    omit_managed_fields=st.sampled_from([None, True, False]),
)
policies = st.builds(
    Policy,
    rules=st.lists(rules, max_size=12),
    omit_stages=subset(list(STAGES)),
    omit_managed_fields=st.booleans(),
)
requests = st.one_of(
    st.builds(
        RequestAttributes,
        user=st.sampled_from([None, *USERS]),
        groups=subset(GROUPS),
        verb=st.sampled_from(VERBS),
        api_group=st.sampled_from(["", "apps"]),
        resource=st.sampled_from(["pods", "deployments", "scale", "log", "*", ""]),
        subresource=st.sampled_from(["", "log", "scale", "*"]),
        namespace=st.sampled_from(NAMESPACES),
        name=st.sampled_from(NAMES),
    ),
    st.builds(
        RequestAttributes,
        user=st.sampled_from([None, *USERS]),
        groups=subset(GROUPS),
        verb=st.sampled_from(VERBS),
        resource_request=st.just(False),
        path=st.sampled_from(["/healthz", "/healthz/x", "/api", "/api/v1", "/", "/metrics"]),
    ),
)


def reference_matches(r: PolicyRule, a: RequestAttributes) -> bool:
    """checker.go's ruleMatches, transliterated line by line with no precomputation."""
    if r.users and (a.user is None or a.user not in r.users):
        return False
    if r.user_groups and (a.user is None or not any(g in r.user_groups for g in a.groups)):
        return False
    if r.verbs and a.verb not in r.verbs:
        return False
    if r.namespaces or r.resources:
        if not a.resource_request:
            return False
        if r.namespaces and a.namespace not in r.namespaces:
            return False
        if not r.resources:
            return True
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        for gr in r.resources:
            if gr.group in (a.api_group, "*"):
                if not gr.resources:
                    return True
                for p in gr.resources:
                    if not gr.resource_names or a.name in gr.resource_names:
                        if p in (combined, "*"):
                            return True
                        if a.subresource and p.startswith("*/") and a.subresource == p[2:]:
                            return True
                        if p.endswith("/*") and a.resource == p[:-2]:
                            return True
        return False
    if r.non_resource_urls:
        if a.resource_request:
            return False
        return any(
            u in ("*", a.path) or (u.endswith("*") and a.path.startswith(u.rstrip("*")))
            for u in r.non_resource_urls
        )
    return True


@settings(max_examples=400)
@given(policies, requests)
def test_evaluate_equals_a_plain_transliteration_of_checker_go(
    policy: Policy, attrs: RequestAttributes
) -> None:
    expected = next((i for i, r in enumerate(policy.rules) if reference_matches(r, attrs)), None)
    result = policy.evaluate(attrs)
    assert result.rule == expected
    if expected is None:
        assert result.level is Level.NONE
    else:
        assert result.level == policy.rules[expected].level


@given(policies, requests)
def test_a_leading_catch_all_none_rule_always_yields_none(
    policy: Policy, attrs: RequestAttributes
) -> None:
    guarded = Policy((PolicyRule(Level.NONE), *policy.rules), policy.omit_stages)
    result = guarded.evaluate(attrs)
    assert (result.level, result.rule) == (Level.NONE, 0)


@given(policies, requests)
def test_omitted_stages_include_the_policy_level_stages(
    policy: Policy, attrs: RequestAttributes
) -> None:
    result = policy.evaluate(attrs)
    assert result.omit_stages >= policy.omit_stages
    if result.rule is not None:
        assert result.omit_stages == policy.omit_stages | set(policy.rules[result.rule].omit_stages)


@given(policies, requests, st.lists(rules, max_size=3))
def test_rules_after_the_first_match_change_nothing(
    policy: Policy, attrs: RequestAttributes, extra: list[PolicyRule]
) -> None:
    result = policy.evaluate(attrs)
    if result.rule is not None:
        longer = Policy(
            (*policy.rules[: result.rule + 1], *extra),
            policy.omit_stages,
            policy.omit_managed_fields,
        )
        assert longer.evaluate(attrs) == result
