"""Rule `audit-scope`: a workload change must be recorded by the cluster's own audit Policy.

Evaluated on workload CREATE/UPDATE (no subresource) and CONNECT to pods/exec, attach and
portforward, with the attributes kube-apiserver's audit filter saw: the URL's resource and
subresource, the URL's name (a POST create has none), the authenticated user. A PATCH reaches
admission as UPDATE (or CREATE for server-side apply), so every verb an operation may stand for is
evaluated and the lowest level counts. The request is outside the audited scope when that level is
below `auditScope.minLevel`, or when its rule omits ResponseComplete, the stage where the audit
annotations that join the logs are recorded (CONNECT: only when ResponseStarted is omitted too).
"""

from __future__ import annotations

from webhook.admission import AdmissionRequest
from webhook.auditpolicy import Evaluation, Level, Policy, RequestAttributes, describe_rule
from webhook.cluster.view import ClusterView
from webhook.rules.result import AUDIT_SCOPE, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject
from webhook.workloads import POD_CONNECT_SUBRESOURCES, is_workload

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


def in_scope(request: AdmissionRequest) -> bool:
    if request.operation == "CONNECT":
        return (
            request.resource.resource == "pods" and request.sub_resource in POD_CONNECT_SUBRESOURCES
        )
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
    if selector is not None:
        facts = cluster.namespace(request.namespace)
        if facts is None or not selector.matches(facts.labels):
            return ()
    # The namespace selector above reads the cluster; the audit Policy's verdict does not, so a
    # re-decision on a live read reuses it.
    key = (AUDIT_SCOPE, id(policy), settings.min_level)
    shortfalls = subject.once(key, lambda: out_of_scope_verbs(request, policy, settings.min_level))
    if not shortfalls:
        return (passed(AUDIT_SCOPE, mode, "inside the audited scope"),)
    return (_finding(request, policy, mode, shortfalls, settings.min_level),)


def out_of_scope_verbs(
    request: AdmissionRequest, policy: Policy, minimum: Level
) -> list[Shortfall]:
    """The verbs the request may stand for whose audit level or stages fall short (`scan` groups
    its findings by the audit policy rules these name)."""
    shortfalls = []
    for verb, named in VERBS[request.operation]:
        evaluation = policy.evaluate(attributes(request, verb, named))
        reason = _shortfall(evaluation, minimum, request.operation == "CONNECT")
        if reason:
            shortfalls.append((verb, evaluation, reason))
    return shortfalls


def attributes(request: AdmissionRequest, verb: str, named: bool) -> RequestAttributes:
    """The audit attributes of the request as the client's URL put them, for one verb."""
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
    parts = []
    for verb, evaluation, reason in shortfalls:
        where = (
            describe_rule(policy, evaluation.rule)
            if evaluation.rule is not None
            else "no audit policy rule matches (level None)"
        )
        parts.append(f"{verb}: {reason} ({where})")
    verbs = ", ".join(v for v, _, _ in shortfalls)
    hint = " `kubectl apply` and `kubectl edit` send patch." if "patch" in verbs else ""
    text = (
        f'{request.operation} of {what} in namespace "{request.namespace}" by '
        f'"{request.user.username}" is outside the audited scope: the audit policy would not '
        f"record {verbs} at {minimum.wire} or above with its ResponseComplete stage. "
        + "; ".join(parts)
        + f". Fix the audit policy so an earlier rule records {verbs} of {what}.{hint}"
    )
    warning = f'{what} {verbs} in "{request.namespace}" is outside the audited scope'
    return RuleResult(AUDIT_SCOPE, mode, False, text, warning=warning)
