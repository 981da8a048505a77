"""Rule `allow-all`: a NetworkPolicy may not neutralise a fence by letting every peer in.

On NetworkPolicy CREATE/UPDATE. A policy with an empty podSelector whose unrestricted rules,
pooled with the namespace's other empty-selector policies, admit every peer for a direction that
was fenced is judged by `defaultDeny.allowAll`. A policy with a non-empty selector that opens the
pods it selects to every peer is reported under `defaultDeny.allowAllSelected` (default warn):
whoever creates a pod chooses its labels.
"""

from __future__ import annotations

from webhook.cluster.view import ClusterView
from webhook.netpol import DIRECTIONS, fence_for
from webhook.rules.result import ALLOW_ALL, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject

RULE = ALLOW_ALL


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    change = subject.policy
    if change is None or request.operation not in ("CREATE", "UPDATE"):
        return ()
    new = change.new
    if new is None:
        return ()
    name = new.name or request.name
    if not new.selects_all:
        mode = settings.mode("allowAllSelected", request.namespace)
        opened = [d for d in DIRECTIONS if new.opens_to_everyone(d)]
        if mode is Mode.OFF or not opened:
            return ()
        text = (
            f'NetworkPolicy "{name}" opens the pods it selects to every peer for '
            f"{' and '.join(opened)}; anyone who can label a pod can use it"
        )
        return (RuleResult(ALLOW_ALL, mode, False, text, warning=text),)
    mode = settings.mode("allowAll", request.namespace)
    if mode is Mode.OFF:
        return ()
    facts = cluster.namespace(request.namespace)
    old = change.old
    before = tuple(facts.policies) if facts else ()
    others = tuple(
        p for p in before if not (p.name == name or (old and p.uid and p.uid == old.uid))
    )
    after = (*others, new)
    if old is not None and not any(p.name == old.name for p in before):
        before = (*before, old)
    neutralised = [
        d
        for d in settings.require
        if not new.reach_for(d).is_nothing
        and fence_for(before, d, strict=settings.strict).fenced
        and fence_for(after, d, strict=settings.strict).neutralised
    ]
    if not neutralised:
        return (passed(ALLOW_ALL, mode, "no fence is neutralised"),)
    text = (
        f'NetworkPolicy "{name}" would neutralise the default-deny of namespace '
        f'"{request.namespace}" for {" and ".join(neutralised)}: together with the namespace\'s '
        "other policies for all pods, it allows every peer (a rule with no peers or ports, a "
        "namespaceSelector matching every namespace, or ipBlocks covering 0.0.0.0/0 or ::/0). "
        "Allow the peers and ports the workloads need instead."
    )
    warning = (
        f'NetworkPolicy "{name}" opens namespace "{request.namespace}" to every peer '
        f"({', '.join(neutralised)})"
    )
    return (RuleResult(ALLOW_ALL, mode, False, text, warning=warning, confirm=request.namespace),)
