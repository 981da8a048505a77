"""`decide(request, cluster, settings) -> Decision`: exemptions, then every rule, then one verdict.

The request's subject (pod template and UPDATE ratchet, or the NetworkPolicy change analysed) is
built once, and each rule that concerns the request's resource judges it. Verdict: `deny` when an
enforce-mode rule failed, else `warn` when a warn-mode rule failed, else `audit` when only
audit-mode rules failed, else `allow`. A `Decision` (`webhook.decision`) carries everything the
shell needs: the response, the policy change to remember if the answer stands, and the live
re-check it needs first (`Decision.recheck`). That re-check is a step of the decision too: the
shell reads the namespace it names and hands the view to `reconsider`, which re-runs on that one
fresh snapshot only the rules that read the cluster; when the read fails, `unconfirmed` is the
answer. The shell knows no rule.

An allowed NetworkPolicy CREATE, UPDATE or DELETE that leaves its namespace unfenced or
neutralised for a required direction fenced before it says so in the `fence-lost` annotation (the
directions, comma-separated; the registry's `FENCE_LOST`, once per request and view, apart from
what the rules answered); an exempt user's or group's too, analysed though no rule judges it.
A dry run never carries it: the webhook sees the request's true `dryRun`, the audit log does not
(a DELETE's body overrides the `dryRun` of its URI, apiserver pkg/endpoints/handlers/delete.go), so
the annotation alone says a fence really went, and `kubefence correlate`/`monitor` trust it.

An internal error is a denial, except on the `finalize` call of a namespace being deleted: that
is an allow with a warning (still logged and counted as the internal error it is), since denying
it would leave the namespace Terminating for good (the registry's `STRANDED_BY_DENIAL`).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from webhook.admission import AdmissionRequest
from webhook.cluster.view import ClusterView
from webhook.controllers import NAMESPACE_CLEANERS
from webhook.decision import Approval, Decision, Recheck
from webhook.rules import FENCE_LOST, RULES, STRANDED_BY_DENIAL, Remembered, Rule
from webhook.rules.result import DEFAULT_DENY, RuleResult
from webhook.settings import Mode, Settings
from webhook.subject import Subject, object_name, policy_change, subject_namespace, subject_of
from webhook.workloads import is_network_policy

__all__ = [
    "INTERNAL_ERROR",
    "Approval",
    "Decision",
    "Memory",
    "Recheck",
    "busy",
    "decide",
    "internal_error",
    "pools",
    "reconsider",
    "unconfirmed",
]

INTERNAL_ERROR = "internal-error"


def _index() -> dict[tuple[str, str], tuple[Rule, ...]]:
    index: dict[tuple[str, str], list[Rule]] = {}
    for rule in RULES:
        for resource in rule.resources:
            index.setdefault(resource, []).append(rule)
    return {resource: tuple(rules) for resource, rules in index.items()}


# A request only meets the rules that concern its resource.
_RULES_BY_RESOURCE = _index()


class Memory(Protocol):
    """The NetworkPolicy changes this process approved, as views over the cluster's."""

    def removals(self, base: ClusterView) -> ClusterView:
        """`base` without the policy versions approved to go."""
        ...

    def additions(self, base: ClusterView) -> ClusterView:
        """`base` with the policy versions approved to come."""
        ...


def _views(cluster: ClusterView, memory: Memory | None) -> Mapping[Remembered, ClusterView]:
    if memory is None:
        return dict.fromkeys(Remembered, cluster)
    return {
        Remembered.NONE: cluster,
        Remembered.REMOVALS: memory.removals(cluster),
        Remembered.ADDITIONS: memory.additions(cluster),
    }


def decide(
    request: AdmissionRequest,
    cluster: ClusterView,
    settings: Settings,
    memory: Memory | None = None,
) -> Decision:
    """Judge `request` on `cluster`; each rule reads `memory`'s approved changes as it declares."""
    namespace = subject_namespace(request)
    exempt = _exemption(request, namespace, cluster, settings)
    if exempt:
        return _exempt(request, namespace, exempt, cluster, settings, memory=memory)
    subject = subject_of(request, settings.limits)
    rules = _RULES_BY_RESOURCE.get((request.resource.group, request.resource.resource), ())
    views = _views(cluster, memory)
    by_rule = tuple((rule, rule.check(subject, views[rule.remembered], settings)) for rule in rules)
    lost = FENCE_LOST.compute(subject, views[FENCE_LOST.remembered], settings)
    return _decision(request, namespace, subject, by_rule, settings, lost=lost)


def pools(request: AdmissionRequest, cluster: ClusterView, settings: Settings) -> bool:
    """Whether deciding `request` may pool its namespace's NetworkPolicies (the costly kind, for
    the shell to run off its event loop): a NetworkPolicy request whose namespace is not exempt.
    An exempt user's still is (its `fence-lost` is analysed); a cheap check, on the view as is."""
    if not is_network_policy(request):
        return False
    namespace = subject_namespace(request)
    return not _namespace_exemption(
        namespace, cluster, settings, terminating_exempts=_cleaning_up(request)
    )


def reconsider(
    decision: Decision,
    cluster: ClusterView,
    settings: Settings,
    memory: Memory | None = None,
) -> Decision:
    """The decision again on a fresh snapshot: exemptions and the rules that read the cluster
    re-run on `cluster`, every other rule's results kept (the audit Policy is not re-evaluated)."""
    subject = decision.subject
    if subject is None:  # exempt or failed: no rule ran, none asked for a live read
        return decision
    request = subject.request
    exempt = _exemption(request, subject.namespace, cluster, settings)
    if exempt:
        return _exempt(
            request, subject.namespace, exempt, cluster, settings, memory=memory, subject=subject
        )
    views = _views(cluster, memory)
    by_rule = tuple(
        (
            rule,
            rule.check(subject, views[rule.remembered], settings)
            if rule.reads_cluster
            else results,
        )
        for rule, results in decision.by_rule
    )
    lost = FENCE_LOST.compute(subject, views[FENCE_LOST.remembered], settings)
    return _decision(request, subject.namespace, subject, by_rule, settings, lost=lost)


def internal_error(request: AdmissionRequest, settings: Settings) -> Decision:
    """The answer when kubefence itself failed: a denial, never a 500.

    The namespace controller's `finalize` call of a namespace being deleted is let through with a
    warning instead: denying it would leave the namespace Terminating for good, and nothing can be
    created in a terminating namespace (upstream NamespaceLifecycle admission), so allowing it
    opens nothing. The caller logs the error either way.
    """
    message = "kubefence could not decide this request (internal error)"
    if STRANDED_BY_DENIAL(request):
        message += "; not denied: this is the finalize call of a namespace being deleted"
        return _denial(request, settings, INTERNAL_ERROR, message, mode=Mode.WARN)
    return _denial(request, settings, INTERNAL_ERROR, message)


def unconfirmed(request: AdmissionRequest, decision: Decision, settings: Settings) -> Decision:
    """The answer when the live read `decision.recheck` asked for failed or was late: a denial
    stands as it was; an allowed fence removal is refused, never let go on cached state alone."""
    if not decision.allowed:
        return decision
    namespace = decision.confirm
    message = (
        f'kubefence could not read the NetworkPolicies of namespace "{namespace}" from the API '
        "server in time, and does not let a fence go on cached state alone; retry"
    )
    return _denial(request, settings, DEFAULT_DENY, message)


def busy(request: AdmissionRequest, settings: Settings) -> Decision:
    """The answer when the request waited past its bound for its namespace's turn to be
    analysed (`webhook.offloop`): a denial, as when kubefence cannot decide; never an allow."""
    message = (
        "kubefence is still judging earlier NetworkPolicy changes of namespace "
        f'"{request.namespace}" and could not judge this one in time; retry'
    )
    return _denial(request, settings, INTERNAL_ERROR, message)


def _denial(
    request: AdmissionRequest,
    settings: Settings,
    rule: str,
    message: str,
    *,
    mode: Mode = Mode.ENFORCE,
) -> Decision:
    """One failure of `rule`: a denial, or with `mode` WARN an allow with a warning."""
    failure = RuleResult(rule, mode, False, message)
    verdict = "deny" if mode is Mode.ENFORCE else "warn"
    annotations = _annotations(request, verdict, (failure,), settings)
    return Decision(
        request.uid,
        verdict,
        (failure,),
        annotations,
        request.namespace,
        failed=(failure,),
        name=object_name(request),
    )


def _exemption(
    request: AdmissionRequest, namespace: str, cluster: ClusterView, settings: Settings
) -> str:
    exemptions = settings.exemptions
    if request.user.username in exemptions.users:
        return f'user "{request.user.username}" is exempt'
    group = next((g for g in request.user.groups if g in exemptions.groups), None)
    if group is not None:
        return f'group "{group}" is exempt'
    return _namespace_exemption(
        namespace, cluster, settings, terminating_exempts=_cleaning_up(request)
    )


def _cleaning_up(request: AdmissionRequest) -> bool:
    """Whether `request` is the namespace controller's deletion of a Terminating namespace's
    content: all a Terminating namespace exempts.

    Its Pods may run for their whole grace period, reachable and exec-able: an `exec` or an
    ephemeral container there is judged as anywhere, so is another user's removal of a fence
    (the guard's teardown rule still lets the last one go once no Pod runs), and so is a
    Namespace write namespace-labels judges (its labels count for every allow rule that trusts
    them while the Pods run; that rule never denies the finalize call of a namespace being
    deleted). Creates never get here: NamespaceLifecycle refuses them before any webhook.
    """
    return request.operation == "DELETE" and request.user.username in NAMESPACE_CLEANERS


def _namespace_exemption(
    namespace: str, cluster: ClusterView, settings: Settings, *, terminating_exempts: bool = True
) -> str:
    exemptions = settings.exemptions
    if namespace in exemptions.namespaces:
        return f'namespace "{namespace}" is exempt'
    if not terminating_exempts:
        return ""
    facts = cluster.namespace(namespace) if namespace else None
    if facts is not None and facts.terminating:
        return f'namespace "{namespace}" is terminating'
    return ""


def _exempt(
    request: AdmissionRequest,
    namespace: str,
    reason: str,
    cluster: ClusterView,
    settings: Settings,
    *,
    memory: Memory | None,
    subject: Subject | None = None,
) -> Decision:
    """The decision when no rule runs (`reason`).

    An exempt user's or group's NetworkPolicy CREATE, DELETE or UPDATE is still analysed, on the
    view the fence guard reads, for what it leaves unfenced: kubefence lets it through and the
    namespace loses its fence all the same, which is what the `fence-lost` annotation tells the
    audit log.
    An exempt namespace is held to no fence, and a terminating one goes with its Pods: neither
    loses a required one, and neither is analysed.
    """
    lost: tuple[str, ...] = ()
    if (
        is_network_policy(request)
        and request.operation in ("CREATE", "DELETE", "UPDATE")
        and not _namespace_exemption(namespace, cluster, settings)
    ):
        subject = subject or subject_of(request, settings.limits)
        lost = FENCE_LOST.compute(subject, _views(cluster, memory)[FENCE_LOST.remembered], settings)
    return _decision(
        request, namespace, None, (), settings, exempt=reason, analysed=subject, lost=lost
    )


def _decision(
    request: AdmissionRequest,
    namespace: str,
    subject: Subject | None,
    by_rule: tuple[tuple[Rule, tuple[RuleResult, ...]], ...],
    settings: Settings,
    *,
    exempt: str = "",
    analysed: Subject | None = None,
    lost: tuple[str, ...] = (),
) -> Decision:
    """The verdict of `by_rule`'s results, with what letting the request through leaves
    unfenced (`lost`). An exempt request (`exempt`, no rules) may come with the subject built to
    analyse it."""
    results = tuple(r for _, rule_results in by_rule for r in rule_results)
    if subject is not None:
        analysed = subject
    failed = tuple(r for r in results if not r.passed)
    modes = {r.mode for r in failed}
    if Mode.ENFORCE in modes:
        verdict = "deny"
    elif Mode.WARN in modes:
        verdict = "warn"
    elif Mode.AUDIT in modes:
        verdict = "audit"
    else:
        verdict = "allow"
    return Decision(
        request.uid,
        verdict,
        results,
        _annotations(request, verdict, failed, settings, lost),
        namespace,
        exempt,
        failed,
        name=subject.name if subject is not None else object_name(request),
        approval=_approval(request, analysed, settings) if verdict != "deny" else None,
        subject=subject,
        by_rule=by_rule,
    )


def _annotations(
    request: AdmissionRequest,
    verdict: str,
    failed: tuple[RuleResult, ...],
    settings: Settings,
    lost: tuple[str, ...] = (),
) -> dict[str, str]:
    annotations = {
        "decision": verdict,
        "rules": ",".join(dict.fromkeys([r.rule for r in failed])) if failed else "",
        "decision-id": request.uid,
        "policy-revision": settings.revision,
    }
    # A denied removal leaves the fence where it was, and a dry run changes nothing.
    if lost and verdict != "deny" and not request.dry_run:
        annotations[FENCE_LOST.key] = ",".join(lost)
    return annotations


def _approval(
    request: AdmissionRequest, subject: Subject | None, settings: Settings
) -> Approval | None:
    """An allowed NetworkPolicy change to count as done until the view shows it.

    Dry runs change nothing. An exempt request may have no subject: its policies are analysed here.
    """
    if request.dry_run or not is_network_policy(request):
        return None
    if request.operation not in ("CREATE", "DELETE", "UPDATE"):
        return None
    change = subject.policy if subject is not None else None
    if change is None:
        change = policy_change(request, settings.limits)
    old = change.old if request.operation != "CREATE" else None
    new = change.new if request.operation != "DELETE" else None
    if old is None and new is None:
        return None
    return Approval(subject_namespace(request), old, new)
