"""Rule `default-deny` for workloads: a workload may only be created where its namespace is fenced.

Reads the namespace's precomputed fences (`defaultDeny.require`, `defaultDeny.definition`), the
workload's pod template (UPDATE ratchet, see `webhook.workloads`) and, for a Namespace CREATE, only
the mode: the new namespace is allowed with a one-line warning.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook.admission import AdmissionRequest
from webhook.cluster.view import ClusterView, NamespaceFacts
from webhook.netpol import Direction
from webhook.remedy import Remedy, remedy
from webhook.rules.result import DEFAULT_DENY, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject
from webhook.workloads import is_namespace

RULE = DEFAULT_DENY


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    if is_namespace(request) and request.operation == "CREATE" and not request.sub_resource:
        return _namespace_created(request.name or _object_name(request), settings)
    workload = subject.workload
    if workload is None:
        return ()
    mode = settings.mode("defaultDeny", request.namespace)
    if mode is Mode.OFF:
        return ()
    if not workload.judged:
        return (passed(DEFAULT_DENY, mode, workload.why_not),)
    if cluster.staleness() > settings.max_staleness:
        return (_stale(request.namespace, cluster, settings, mode),)
    if not cluster.synced:
        return (_unsynced(request.namespace, mode),)
    facts = cluster.namespace(request.namespace)
    missing, neutralised = unfenced_directions(facts, settings)
    if not missing:
        return (passed(DEFAULT_DENY, mode, f'namespace "{request.namespace}" is fenced'),)
    taken = [p.name for p in facts.policies] if facts is not None else []
    isolated = [d for d in missing if facts is not None and facts.fence(d, settings.strict).fencing]
    fix = remedy(request.namespace, missing, neutralised, taken, isolated)
    return (
        RuleResult(
            DEFAULT_DENY,
            mode,
            False,
            unfenced_message(request.namespace, missing, fix),
            warning=unfenced_warning(request.namespace, fix),
            confirm=request.namespace,
        ),
    )


def unfenced_directions(
    facts: NamespaceFacts | None, settings: Settings
) -> tuple[tuple[Direction, ...], dict[Direction, tuple[str, ...]]]:
    """The required directions a namespace is not fenced for, and who neutralises each fence."""
    if facts is None:
        return settings.require, {}
    missing: list[Direction] = []
    neutralised: dict[Direction, tuple[str, ...]] = {}
    for direction in settings.require:
        fence = facts.fence(direction, settings.strict)
        if not fence.fenced:
            missing.append(direction)
            if fence.neutralised:
                neutralised[direction] = fence.openers
    return tuple(missing), neutralised


def unfenced_message(namespace: str, missing: Sequence[Direction], fix: Remedy) -> str:
    lines = [
        f'namespace "{namespace}" is not fenced for {" and ".join(missing)}: workloads need a '
        "default-deny NetworkPolicy (an empty podSelector isolating every pod) first."
    ]
    return "\n".join([*lines, *fix.steps()])


def unfenced_warning(namespace: str, fix: Remedy) -> str:
    """One line for response.warnings, true for missing and for neutralised fences alike."""
    parts = []
    if fix.add:
        parts.append(f"has no default-deny NetworkPolicy for {', '.join(fix.add)}")
    for direction, names in fix.narrow.items():
        what = "opened to every peer" if direction in fix.add else "default-deny neutralised"
        parts.append(f"has its {direction} {what} by {', '.join(names)}")
    return f'namespace "{namespace}" ' + " and ".join(parts)


def _namespace_created(name: str, settings: Settings) -> tuple[RuleResult, ...]:
    if settings.mode("defaultDeny", name) is Mode.OFF or name in settings.exemptions.namespaces:
        return ()
    text = (
        f'namespace "{name}": workloads will be denied until it has a default-deny '
        f"NetworkPolicy for {', '.join(settings.require)}"
    )
    # Always a warning, never a denial: the namespace must exist before its policy can.
    return (RuleResult(DEFAULT_DENY, Mode.WARN, False, text, warning=text),)


def _object_name(request: AdmissionRequest) -> str:
    meta = (request.object or {}).get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _unsynced(namespace: str, mode: Mode) -> RuleResult:
    """Before the first complete read of the cluster nothing is known, not even "unfenced"."""
    text = (
        f'kubefence cannot tell yet whether namespace "{namespace}" is fenced: its view of the '
        "cluster has not finished its first sync with the API server (cache_synced: false); "
        "retry in a few seconds"
    )
    return RuleResult(DEFAULT_DENY, mode, False, text, warning=text, confirm=namespace)


def _stale(namespace: str, cluster: ClusterView, settings: Settings, mode: Mode) -> RuleResult:
    age = f"{cluster.staleness():.0f}s"
    if not settings.deny_on_stale:
        return passed(DEFAULT_DENY, mode, f"cluster cache stale ({age}); cache.onStale: allow")
    text = (
        f'kubefence cannot confirm that namespace "{namespace}" is fenced: its view of '
        f"the cluster is stale ({age} without the API server; cache.onStale: deny)"
    )
    return RuleResult(DEFAULT_DENY, mode, False, text, warning=text, confirm=namespace)
