"""Rule `default-deny`, evasion guard: a fence may not be deleted or weakened while Pods rely on it.

Removing or weakening a NetworkPolicy P that fences a required direction is allowed only while
another policy fencing that direction, older than P (creationTimestamp, then name), remains. Two
removals decided at once therefore never both pass: of any two fences, only the newer may go. The
oldest fence goes only by teardown (the namespace has no running Pods, or is terminating); an
UPDATE that keeps P fencing is always allowed. A deletecollection item arrives with an empty
`name`: the policy is the one in `oldObject`.

Each result of a removal also says which required directions letting it through leaves
unfenced (`RuleResult.fence_lost`: the losing directions that the remaining policies, the
replacement included, do not fence): the teardown pass, or a blocked removal that warn or audit
mode lets go. Never when another fence, older or newer, keeps the direction fenced.
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.cluster.view import ClusterView, NamespaceFacts
from webhook.netpol import Direction, PolicyFacts, fence_for
from webhook.rules.result import DEFAULT_DENY, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject

RULE = DEFAULT_DENY


@dataclass(frozen=True, slots=True)
class _Removal:
    """A DELETE or UPDATE of a policy that fences some required direction today."""

    removed: PolicyFacts
    replacement: PolicyFacts | None  # the UPDATE's new version; None for a DELETE
    others: tuple[PolicyFacts, ...]  # the namespace's other policies
    facts: NamespaceFacts | None
    losing: tuple[Direction, ...]  # fenced today, by `removed` and not by `replacement`
    lost: tuple[Direction, ...]  # of `losing`, those the remaining policies do not fence


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    mode = settings.mode("defaultDeny", request.namespace)
    removal = _removal(subject, cluster, settings) if mode is not Mode.OFF else None
    if removal is None:
        return ()
    removed, others, lost = removal.removed, removal.others, removal.lost
    verb = "deleting" if removal.replacement is None else "this update of"
    if not removal.losing:
        return (passed(DEFAULT_DENY, mode, "no fence is lost"),)
    # From here the answer rests on the cached policies and Pods: the shell re-reads them live
    # before it lets a fence go (a stale cache must never let the last fence go).
    if removal.facts is not None and removal.facts.running_pods == 0:
        message = "teardown: the namespace has no running Pods"
        return (_confirmed_pass(mode, message, request.namespace, lost),)
    blocked = [d for d in removal.losing if not _older_fence(others, removed, d, settings.strict)]
    if not blocked:
        message = "an older policy keeps the namespace fenced"
        return (_confirmed_pass(mode, message, request.namespace, lost),)
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
    # Denied in enforce mode (the decision then reports no loss); let through in warn or audit
    # mode, when it leaves `lost` unfenced.
    return (
        RuleResult(
            DEFAULT_DENY,
            mode,
            False,
            text,
            warning=warning,
            confirm=request.namespace,
            fence_lost=lost,
        ),
    )


def left_unfenced(
    subject: Subject, cluster: ClusterView, settings: Settings
) -> tuple[Direction, ...]:
    """The required directions that letting `subject`'s DELETE or UPDATE through leaves unfenced,
    whatever the guard would answer (for a request no rule judges: an exempt user's)."""
    if settings.mode("defaultDeny", subject.request.namespace) is Mode.OFF:
        return ()
    removal = _removal(subject, cluster, settings)
    return removal.lost if removal is not None else ()


def _removal(subject: Subject, cluster: ClusterView, settings: Settings) -> _Removal | None:
    request = subject.request
    change = subject.policy
    if change is None or request.operation not in ("DELETE", "UPDATE"):
        return None
    removed = change.old
    if removed is None:
        return None
    replacement = change.new if request.operation == "UPDATE" else None
    facts = cluster.namespace(request.namespace)
    others = tuple(p for p in (facts.policies if facts else ()) if not p.same_object(removed))
    current = (*others, removed)
    strict = settings.strict
    losing = tuple(
        d
        for d in settings.require
        if removed.fences(d, strict)
        and not (replacement is not None and replacement.fences(d, strict))
        and _fenced(current, d, strict)
    )
    remaining = (*others, replacement) if replacement is not None else others
    lost = tuple(d for d in losing if not _fenced(remaining, d, strict))
    return _Removal(removed, replacement, others, facts, losing, lost)


def _confirmed_pass(
    mode: Mode, message: str, namespace: str, lost: tuple[Direction, ...]
) -> RuleResult:
    return RuleResult(DEFAULT_DENY, mode, True, message, confirm=namespace, fence_lost=lost)


def _fenced(policies: tuple[PolicyFacts, ...], direction: Direction, strict: bool) -> bool:
    return fence_for(policies, direction, strict=strict).fenced


def _older_fence(
    others: tuple[PolicyFacts, ...], removed: PolicyFacts, direction: Direction, strict: bool
) -> bool:
    return any(p.fences(direction, strict) and p.age_key < removed.age_key for p in others)
