"""Rule `default-deny`, evasion guard: a fence may not be deleted or weakened while Pods rely on it.

Removing or weakening a NetworkPolicy P that fences a required direction is allowed only while
another policy fencing that direction, older than P (creationTimestamp, then name), remains. Two
removals decided at once therefore never both pass: of any two fences, only the newer may go. The
oldest fence goes only by teardown (the namespace has no running Pods, or is terminating); an
UPDATE that keeps P fencing is always allowed. A deletecollection item arrives with an empty
`name`: the policy is the one in `oldObject`.

`left_unfenced` is the `fence-lost` annotation of any allowed NetworkPolicy CREATE, UPDATE or
DELETE, computed apart from the guard's answer: the required directions the namespace's pooled
fence covered before the change and does not after it (a teardown, a removal warn or audit mode
lets go, a neutralising update or create, an exempt user's change).
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.cluster.view import ClusterView, NamespaceFacts
from webhook.netpol import Direction, DirectionFence, PolicyFacts
from webhook.rules.result import DEFAULT_DENY, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import PolicyChange, Subject

RULE = DEFAULT_DENY


@dataclass(frozen=True, slots=True)
class _Removal:
    """A DELETE or UPDATE of a policy that fences some required direction today."""

    removed: PolicyFacts
    replacement: PolicyFacts | None  # the UPDATE's new version; None for a DELETE
    others: tuple[PolicyFacts, ...]  # the namespace's other policies
    facts: NamespaceFacts | None
    losing: tuple[Direction, ...]  # fenced today, by `removed` and not by `replacement`


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    mode = settings.mode("defaultDeny", request.namespace)
    removal = _removal(subject, cluster, settings) if mode is not Mode.OFF else None
    if removal is None:
        return ()
    removed, others = removal.removed, removal.others
    verb = "deleting" if removal.replacement is None else "this update of"
    if not removal.losing:
        return (passed(DEFAULT_DENY, mode, "no fence is lost"),)
    # From here the answer rests on the cached policies and Pods: the shell re-reads them live
    # before it lets a fence go (a stale cache must never let the last fence go).
    if removal.facts is not None and removal.facts.running_pods == 0:
        message = "teardown: the namespace has no running Pods"
        return (_confirmed_pass(mode, message, request.namespace),)
    blocked = [d for d in removal.losing if not _older_fence(others, removed, d, settings.strict)]
    if not blocked:
        message = "an older policy keeps the namespace fenced"
        return (_confirmed_pass(mode, message, request.namespace),)
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
    # Denied in enforce mode; let through in warn or audit mode.
    return (
        RuleResult(
            DEFAULT_DENY,
            mode,
            False,
            text,
            warning=warning,
            confirm=request.namespace,
        ),
    )


def left_unfenced(
    subject: Subject, cluster: ClusterView, settings: Settings
) -> tuple[Direction, ...]:
    """The required directions fenced before `subject`'s NetworkPolicy CREATE, UPDATE or DELETE
    and not after it: the `fence-lost` annotation when the request is let through, whoever let
    it (a rule's warn or audit mode, a teardown, an exempt user) and whatever the rules answered.

    Before: the namespace's policies in `cluster` (the guard's view), the changed one as the
    request's `oldObject`; after: the others and the new version. A direction is fenced when
    the namespace's pooled fence (`netpol.fence_for`) is: so an update of a deny-all into
    `ingress: [{}]` or a CREATE of an allow-all loses the fence it neutralises, not only a delete.
    Computed at most once per request and view (memoised on the subject); never for a dry run,
    which changes nothing and carries no annotation.
    """
    change = subject.policy
    request = subject.request
    if (
        change is None
        or request.dry_run  # the annotation is never sent for one: nothing to pool for it
        or request.operation not in ("CREATE", "UPDATE", "DELETE")
        or settings.mode("defaultDeny", request.namespace) is Mode.OFF
    ):
        return ()
    # The view is part of the key and kept in the value: a live re-read gives another view, and
    # a key of identities stays valid while the memo keeps its objects alive.
    key = ("fence-lost", id(cluster))
    kept, lost = subject.once(key, lambda: (cluster, _lost(subject, change, cluster, settings)))
    assert kept is cluster
    return lost


def _lost(
    subject: Subject, change: PolicyChange, cluster: ClusterView, settings: Settings
) -> tuple[Direction, ...]:
    request = subject.request
    old = change.old if request.operation != "CREATE" else None
    new = change.new if request.operation != "DELETE" else None
    facts = cluster.namespace(request.namespace)
    present = tuple(facts.policies) if facts else ()
    others = tuple(p for p in present if not _same(p, old, new))
    before = (*others, old) if old is not None else present
    after = (*others, new) if new is not None else others
    strict, limits = settings.strict, settings.limits
    return tuple(
        d
        for d in settings.require
        if subject.fence(before, d, strict=strict, limits=limits, facts=facts).fenced
        and not subject.fence(after, d, strict=strict, limits=limits).fenced
    )


def _same(policy: PolicyFacts, old: PolicyFacts | None, new: PolicyFacts | None) -> bool:
    """Whether `policy` of the view is the one the request changes (by uid, else by name)."""
    return any(p is not None and policy.same_object(p) for p in (old, new))


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
        and _may_be_fenced(subject.fence(current, d, strict=strict, limits=settings.limits))
    )
    return _Removal(removed, replacement, others, facts, losing)


def _may_be_fenced(fence: DirectionFence) -> bool:
    """Whether the namespace may be fenced now: it is, or a policy or the namespace is over a
    limit and so not analysed. Not analysed is no proof that nothing fences it: the Pods already
    running may rely on this policy, so its removal is judged as a fence's (fail closed)."""
    return fence.fenced or bool(fence.refused) or bool(fence.over_limit)


def _confirmed_pass(mode: Mode, message: str, namespace: str) -> RuleResult:
    return RuleResult(DEFAULT_DENY, mode, True, message, confirm=namespace)


def _older_fence(
    others: tuple[PolicyFacts, ...], removed: PolicyFacts, direction: Direction, strict: bool
) -> bool:
    return any(p.fences(direction, strict) and p.age_key < removed.age_key for p in others)
