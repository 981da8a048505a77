"""Rule `allow-all`: a NetworkPolicy may not neutralise a fence by letting every peer in.

On NetworkPolicy CREATE/UPDATE, judged on the reach model of `webhook.netpol` (ports x peers,
pooled over every policy whose podSelector opens every pod):
- a policy whose pool with the namespace's other all-pods policies lets every peer in on every
  port of some protocol, for a direction that was fenced: `defaultDeny.allowAll`;
- one whose pool leaves out almost nothing (fewer than 1,024 ports or only ports of the dynamic
  range 49152-65535, or less than a /16 of IPv4 and a /48 of IPv6 peers):
  `defaultDeny.allowNearlyAll` (default warn);
- one whose podSelector is narrower, when some pod it selects is open to every peer together
  with the policies that can select that pod too: `defaultDeny.allowAllSelected` (default warn):
  whoever creates a pod chooses its labels;
- a CREATE or growing UPDATE of a policy over a `limits:` bound (or that takes its namespace over
  one) is denied under `defaultDeny.allowAll`, naming the limit: it is not analysed, and would
  count as opening everything. A shrinking UPDATE is judged as usual.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook.cluster.view import ClusterView, NamespaceFacts
from webhook.netpol import (
    DIRECTIONS,
    Limits,
    PolicyFacts,
    namespace_refusal,
    opens_selected_to_everyone,
)
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
    namespace = request.namespace
    name = new.name or request.name
    old = change.old
    facts = cluster.namespace(namespace)
    present = tuple(facts.policies) if facts else ()
    # What was there before is the view's; the versions this process just approved (remembered)
    # count in the pool after, never as the state before (a forged one must not make a fence
    # look gone already).
    before = (
        tuple(p for p in present if not p.remembered)
        if any(p.remembered for p in present)
        else present  # the view's own tuple: its fences were computed when it changed
    )
    others = tuple(
        p for p in present if not (p.name == name or (old and p.uid and p.uid == old.uid))
    )
    after = (*others, new)
    limit_mode = settings.mode("allowAll", namespace)
    refusal = _grows_over_limit(new, old, before, after, settings.limits)
    if refusal and limit_mode is not Mode.OFF:
        text = (
            f'NetworkPolicy "{name}" is too large for kubefence to judge: {refusal}. Split it '
            "into smaller policies, or raise the limit in the kubefence config (`limits:`)."
        )
        return (RuleResult(ALLOW_ALL, limit_mode, False, text, warning=text),)
    if not new.opens_all_pods:
        return _selected(name, namespace, new, others, settings)
    if old is not None and not any(p.name == old.name for p in before):
        before = (*before, old)
    return _all_pods(subject, name, new, before=before, after=after, settings=settings, facts=facts)


def _grows_over_limit(
    new: PolicyFacts,
    old: PolicyFacts | None,
    before: Sequence[PolicyFacts],
    after: Sequence[PolicyFacts],
    limits: Limits,
) -> str:
    """The limit a CREATE or growing UPDATE goes over ("" when none, or when it shrinks)."""
    grows = old is None or new.size.grows(old.size)
    if new.refused and grows:
        return new.refused
    over = namespace_refusal(after, limits)
    if over and (grows or len(after) > len(before)):
        return over
    return ""


def _selected(
    name: str,
    namespace: str,
    new: PolicyFacts,
    others: Sequence[PolicyFacts],
    settings: Settings,
) -> tuple[RuleResult, ...]:
    mode = settings.mode("allowAllSelected", namespace)
    if mode is Mode.OFF:
        return ()
    opened = [
        d
        for d in DIRECTIONS
        if not new.reach_for(d).is_nothing
        and opens_selected_to_everyone(new, others, d, limits=settings.limits)
    ]
    if not opened:
        return ()
    text = (
        f'NetworkPolicy "{name}" opens the pods it selects to every peer for '
        f"{' and '.join(opened)}; anyone who can label a pod can use it"
    )
    return (RuleResult(ALLOW_ALL, mode, False, text, warning=text),)


def _all_pods(
    subject: Subject,
    name: str,
    new: PolicyFacts,
    *,
    before: Sequence[PolicyFacts],
    after: Sequence[PolicyFacts],
    settings: Settings,
    facts: NamespaceFacts | None,
) -> tuple[RuleResult, ...]:
    namespace = subject.request.namespace
    mode = settings.mode("allowAll", namespace)
    nearly_mode = settings.mode("allowNearlyAll", namespace)
    if mode is Mode.OFF and nearly_mode is Mode.OFF:
        return ()
    strict, limits = settings.strict, settings.limits
    neutralised: list[str] = []
    nearly: list[tuple[str, str]] = []
    for direction in settings.require:
        if new.reach_for(direction).is_nothing:
            continue
        if not subject.fence(before, direction, strict=strict, limits=limits, facts=facts).fenced:
            continue
        fence = subject.fence(after, direction, strict=strict, limits=limits)
        if fence.neutralised:
            neutralised.append(direction)
        elif name in fence.nearly_all_by:
            nearly.append((direction, fence.nearly_all))
    results: list[RuleResult] = []
    if mode is not Mode.OFF:
        results.append(_neutralising(name, namespace, neutralised, mode))
    if nearly and nearly_mode is not Mode.OFF:
        results.append(_nearly_all(name, namespace, nearly, nearly_mode))
    return tuple(results)


def _neutralising(name: str, namespace: str, directions: list[str], mode: Mode) -> RuleResult:
    if not directions:
        return passed(ALLOW_ALL, mode, "no fence is neutralised")
    text = (
        f'NetworkPolicy "{name}" would neutralise the default-deny of namespace '
        f'"{namespace}" for {" and ".join(directions)}: together with the namespace\'s '
        "other policies for all pods, it allows every peer (a rule with no peers or ports, a "
        "namespaceSelector matching every namespace, or ipBlocks covering 0.0.0.0/0 or ::/0). "
        "Allow the peers and ports the workloads need instead."
    )
    warning = (
        f'NetworkPolicy "{name}" opens namespace "{namespace}" to every peer '
        f"({', '.join(directions)})"
    )
    return RuleResult(ALLOW_ALL, mode, False, text, warning=warning, confirm=namespace)


def _nearly_all(name: str, namespace: str, nearly: list[tuple[str, str]], mode: Mode) -> RuleResult:
    directions = [d for d, _ in nearly]
    left = "; ".join(f"{d}: {what}" for d, what in nearly)
    text = (
        f'NetworkPolicy "{name}" nearly neutralises the default-deny of namespace '
        f'"{namespace}" for {" and ".join(directions)}: together with the namespace\'s other '
        f"policies for all pods it lets almost every peer in on almost every port ({left}). "
        "Allow the peers and ports the workloads need instead."
    )
    warning = (
        f'NetworkPolicy "{name}" opens namespace "{namespace}" to nearly every peer '
        f"({', '.join(directions)})"
    )
    return RuleResult(ALLOW_ALL, mode, False, text, warning=warning)
