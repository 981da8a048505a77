"""Rule `default-deny`, evasion guard: a fence may not be deleted or weakened while Pods rely on it.

Removing or weakening a NetworkPolicy P that fences a required direction is allowed only while
another policy fencing that direction, older than P (creationTimestamp, then name), remains. Two
removals decided at once therefore never both pass: of any two fences, only the newer may go. The
oldest fence goes only by teardown (the namespace has no running Pods, or is terminating); an
UPDATE that keeps P fencing is always allowed. A deletecollection item arrives with an empty
`name`: the policy is the one in `oldObject`.
"""

from __future__ import annotations

from webhook.cluster.view import ClusterView
from webhook.netpol import Direction, PolicyFacts, fence_for
from webhook.rules.result import DEFAULT_DENY, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject

RULE = DEFAULT_DENY


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    change = subject.policy
    if change is None or request.operation not in ("DELETE", "UPDATE"):
        return ()
    mode = settings.mode("defaultDeny", request.namespace)
    removed = change.old
    if mode is Mode.OFF or removed is None:
        return ()
    replacement = change.new if request.operation == "UPDATE" else None
    verb = "deleting" if replacement is None else "this update of"
    facts = cluster.namespace(request.namespace)
    others = tuple(p for p in (facts.policies if facts else ()) if not p.same_object(removed))
    current = (*others, removed)
    losing = [
        d
        for d in settings.require
        if removed.fences(d, settings.strict)
        and not (replacement is not None and replacement.fences(d, settings.strict))
        and _fenced(current, d, settings.strict)
    ]
    if not losing:
        return (passed(DEFAULT_DENY, mode, "no fence is lost"),)
    # From here the answer rests on the cached policies and Pods: the shell re-reads them live
    # before it lets a fence go (a stale cache must never let the last fence go).
    if facts is not None and facts.running_pods == 0:
        return (
            _confirmed_pass(mode, "teardown: the namespace has no running Pods", request.namespace),
        )
    blocked = [d for d in losing if not _older_fence(others, removed, d, settings.strict)]
    if not blocked:
        return (
            _confirmed_pass(mode, "an older policy keeps the namespace fenced", request.namespace),
        )
    newer = sorted({p.name for p in others for d in blocked if p.fences(d, settings.strict)})
    text = (
        f'{verb} NetworkPolicy "{removed.name}" would leave namespace "{request.namespace}" '
        f"unfenced for {' and '.join(blocked)}: it is the oldest policy fencing "
        f"{'them' if len(blocked) > 1 else 'it'}."
    )
    if newer:
        text += (
            f" Newer fences ({', '.join(newer)}) may go instead; the oldest goes last, "
            "so that two removals decided at once cannot both pass."
        )
    text += (
        " To replace it, edit it in place (an update that keeps it fencing is allowed); to remove "
        "it, delete the namespace's workloads first (a namespace with no running Pods may drop "
        "its fence) or delete the namespace."
    )
    warning = (
        f'NetworkPolicy "{removed.name}" is the last fence of namespace "{request.namespace}" '
        f"for {', '.join(blocked)}"
    )
    return (
        RuleResult(DEFAULT_DENY, mode, False, text, warning=warning, confirm=request.namespace),
    )


def _confirmed_pass(mode: Mode, message: str, namespace: str) -> RuleResult:
    return RuleResult(DEFAULT_DENY, mode, True, message, confirm=namespace)


def _fenced(policies: tuple[PolicyFacts, ...], direction: Direction, strict: bool) -> bool:
    return fence_for(policies, direction, strict=strict).fenced


def _older_fence(
    others: tuple[PolicyFacts, ...], removed: PolicyFacts, direction: Direction, strict: bool
) -> bool:
    return any(p.fences(direction, strict) and p.age_key < removed.age_key for p in others)
