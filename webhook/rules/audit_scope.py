"""Rule `audit-scope`: a workload change must be recorded by the cluster's own audit Policy.

Evaluated on workload CREATE/UPDATE (no subresource), UPDATE of pods/ephemeralcontainers (what
`kubectl debug` PATCHes) and the API server's tunnels (CONNECT to pods/exec, attach, portforward
and proxy, services/proxy, nodes/proxy), with the attributes kube-apiserver's audit filter saw:
the URL's resource and subresource, the URL's name (a POST create has none; a proxy's is
`[scheme:]name[:port]`), the authenticated user. A PATCH reaches admission as UPDATE (or CREATE
for server-side apply), a proxy CONNECT may be any of six verbs, so every verb an operation may
stand for is evaluated and the lowest level counts. The request is outside the audited scope when
that level is below `auditScope.minLevel`, or when its rule omits ResponseComplete, the stage
where the audit annotations that join the logs are recorded (CONNECT: only when ResponseStarted
is omitted too). `auditScope.namespaceSelector` does not apply to cluster-scoped nodes/proxy.
"""

from __future__ import annotations

from webhook.admission import AdmissionRequest
from webhook.auditpolicy import Evaluation, Level, Policy, RequestAttributes, describe_rule
from webhook.cluster.view import ClusterView
from webhook.rules.result import AUDIT_SCOPE, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject
from webhook.workloads import EPHEMERAL_CONTAINERS, is_ephemeral_update, is_workload

RULE = AUDIT_SCOPE
Shortfall = tuple[str, Evaluation, str]  # verb, its evaluation, why it falls short

# Operation -> (verb, whether the URL carries the object's name). From apiserver
# endpoints/handlers: create POSTs to the collection; patch (incl. server-side apply, which may
# create) and update name the object; deletecollection names none.
VERBS: dict[str, tuple[tuple[str, bool], ...]] = {
    "CREATE": (("create", False), ("patch", True)),
    "UPDATE": (("update", True), ("patch", True)),
    "DELETE": (("delete", True), ("deletecollection", False)),
    "CONNECT": (("create", True), ("get", True)),
}
# A proxy forwards GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS (kubernetes pkg/registry
# core/pod/rest/subresources.go proxyMethods; services and nodes alike), which apiserver
# request/requestinfo.go records as get, create, update, patch, delete and "" (OPTIONS: only an
# audit rule without `verbs`, or one listing "", matches it: policy/checker.go).
PROXY_VERBS: tuple[tuple[str, bool], ...] = tuple(
    (verb, True) for verb in ("get", "create", "update", "patch", "delete", "")
)
# The API server's tunnels: the connecter subresources it sends CONNECT admission for (apiserver
# endpoints/handlers/rest.go ConnectResource), all in the core group. nodes/proxy reaches the
# kubelet API (exec into any pod of the node).
TUNNELS = frozenset(
    {("pods", "exec"), ("pods", "attach"), ("pods", "portforward")}
    | {("pods", "proxy"), ("services", "proxy"), ("nodes", "proxy")}
)
TUNNEL_RESOURCES = frozenset(("", resource) for resource, _ in TUNNELS)


def in_scope(request: AdmissionRequest) -> bool:
    if request.operation == "CONNECT":
        resource = request.resource
        return resource.group == "" and (resource.resource, request.sub_resource) in TUNNELS
    if is_ephemeral_update(request):  # a debug container is a new process in the pod
        return True
    return (
        is_workload(request)
        and request.operation in ("CREATE", "UPDATE")
        and not request.sub_resource
    )


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    mode = settings.mode("auditScope", request.namespace)
    policy = settings.audit_policy
    if mode is Mode.OFF or policy is None or not in_scope(request):
        return ()
    selector = settings.audit_namespace_selector
    # As a webhook's namespaceSelector, it does not apply to a cluster-scoped request (nodes/proxy).
    if selector is not None and request.namespace:
        facts = cluster.namespace(request.namespace)
        if facts is None or not selector.matches(facts.labels):
            return ()
    # The namespace selector above reads the cluster; the audit Policy's verdict does not, so a
    # re-decision on a live read reuses it.
    key = (AUDIT_SCOPE, id(policy), settings.min_level)
    shortfalls = subject.once(key, lambda: _remembered(request, policy, settings.min_level))
    if not shortfalls:
        return (passed(AUDIT_SCOPE, mode, "inside the audited scope"),)
    return (_finding(request, policy, mode, shortfalls, settings.min_level),)


# The audit Policy's answer per request key: a Policy is immutable and its answer depends only on
# the attributes `attributes` reads and the operation, so requests that repeat them (a
# controller's creates, a rollout's updates) are not evaluated again. Bounded: emptied when full.
# The key holds the Policy itself, so a reloaded one never meets an answer of the old.
# An object's name is in the key only when a rule of the Policy names resources of the request's
# group and resource (`_GroupMatcher` reads the name only there): otherwise a controller's creates
# of uniquely named objects share one answer.
MEMO_LIMIT = 4096
_MEMO: dict[tuple[object, ...], list[Shortfall]] = {}
_NAMES_MATTER: dict[tuple[Policy, str, str], bool] = {}


def _names_matter(policy: Policy, group: str, resource: str) -> bool:
    key = (policy, group, resource)
    matter = _NAMES_MATTER.get(key)
    if matter is None:
        if len(_NAMES_MATTER) >= 256:
            _NAMES_MATTER.clear()
        # Conservative: every pattern whose first segment is the resource or "*" may match it.
        matter = _NAMES_MATTER[key] = any(
            gr.resource_names
            and gr.group in (group, "*")
            and any(r.split("/", 1)[0] in (resource, "*") for r in gr.resources)
            for rule in policy.rules
            for gr in rule.resources
        )
    return matter


def _remembered(request: AdmissionRequest, policy: Policy, minimum: Level) -> list[Shortfall]:
    resource = request.url_resource
    user = request.user
    key = (
        policy,
        minimum,
        request.operation,
        request.sub_resource,
        user.username,
        user.groups,
        resource.group,
        resource.version,
        resource.resource,
        request.url_sub_resource,
        request.namespace,
        request.name if _names_matter(policy, resource.group, resource.resource) else "",
    )
    shortfalls = _MEMO.get(key)
    if shortfalls is None:
        if len(_MEMO) >= MEMO_LIMIT:
            _MEMO.clear()
        shortfalls = _MEMO[key] = out_of_scope_verbs(request, policy, minimum)
    return shortfalls


def out_of_scope_verbs(
    request: AdmissionRequest, policy: Policy, minimum: Level
) -> list[Shortfall]:
    """The verbs the request may stand for whose audit level or stages fall short (`scan` groups
    its findings by the audit policy rules these name)."""
    shortfalls = []
    verbs = PROXY_VERBS if _is_proxy(request) else VERBS[request.operation]
    for verb, named in verbs:
        evaluation = policy.evaluate(attributes(request, verb, named))
        reason = _shortfall(evaluation, minimum, request.operation == "CONNECT")
        if reason:
            shortfalls.append((verb, evaluation, reason))
    return shortfalls


def _is_proxy(request: AdmissionRequest) -> bool:
    return request.operation == "CONNECT" and request.sub_resource == "proxy"


def attributes(request: AdmissionRequest, verb: str, named: bool) -> RequestAttributes:
    """The audit attributes of the request as the client's URL put them, for one verb.

    The name is the URL's segment, which the audit filter and admission both take from the
    RequestInfo (handlers/namer.go): for a proxy that is `[scheme:]name[:port]` as written, so a
    `resourceNames: [web]` rule does not match a proxy to `web:8080`, upstream as here.
    """
    resource = request.url_resource
    return RequestAttributes(
        user=request.user.username or None,
        groups=request.user.groups,
        verb=verb,
        resource_request=True,
        api_group=resource.group,
        api_version=resource.version,
        resource=resource.resource,
        subresource=request.url_sub_resource,
        namespace=request.namespace,
        name=request.name if named else "",
    )


def _shortfall(evaluation: Evaluation, minimum: Level, connect: bool) -> str:
    if evaluation.level < minimum:
        return f"level {evaluation.level.wire}, below {minimum.wire}"
    if "ResponseComplete" in evaluation.omit_stages and (
        not connect or "ResponseStarted" in evaluation.omit_stages
    ):
        return "stage ResponseComplete omitted, where the audit annotations are recorded"
    return ""


def _finding(
    request: AdmissionRequest,
    policy: Policy,
    mode: Mode,
    shortfalls: list[Shortfall],
    minimum: Level,
) -> RuleResult:
    resource = request.url_resource
    what = "/".join(p for p in (resource.group, resource.resource, request.url_sub_resource) if p)
    # A cluster-scoped tunnel (nodes/proxy) has no namespace to name: name the node.
    where_to = (
        f'in namespace "{request.namespace}"' if request.namespace else f'to "{request.name}"'
    )
    parts = []
    for verb, evaluation, reason in shortfalls:
        where = (
            describe_rule(policy, evaluation.rule)
            if evaluation.rule is not None
            else "no audit policy rule matches (level None)"
        )
        parts.append(f"{_shown(verb)}: {reason} ({where})")
    verbs = ", ".join(_shown(v) for v, _, _ in shortfalls)
    hint = ""
    if "patch" in verbs and request.operation != "CONNECT":
        hint = (
            " `kubectl debug` sends patch."
            if request.url_sub_resource == EPHEMERAL_CONTAINERS
            else " `kubectl apply` and `kubectl edit` send patch."
        )
    if _is_proxy(request) and ":" in request.name:
        hint += (
            f' The audit policy sees the proxy\'s name as the URL writes it, "{request.name}"'
            " ([scheme:]name[:port]): a resourceNames rule must list it so."
        )
    text = (
        f"{request.operation} of {what} {where_to} by "
        f'"{request.user.username}" is outside the audited scope: the audit policy would not '
        f"record {verbs} at {minimum.wire} or above with its ResponseComplete stage. "
        + "; ".join(parts)
        + f". Fix the audit policy so an earlier rule records {verbs} of {what}.{hint}"
    )
    where_short = f'in "{request.namespace}"' if request.namespace else f'to "{request.name}"'
    warning = f"{what} {verbs} {where_short} is outside the audited scope"
    return RuleResult(AUDIT_SCOPE, mode, False, text, warning=warning)


def _shown(verb: str) -> str:
    """An audit verb for a message; the empty verb is what an OPTIONS request is recorded as."""
    return verb or '"" (OPTIONS)'
