"""`decide(request, cluster, settings) -> Decision`: exemptions, then every rule, then one verdict.

Verdict: `deny` when an enforce-mode rule failed, else `warn` when a warn-mode rule failed, else
`audit` when only audit-mode rules failed, else `allow`. Every decision carries the audit
annotations that join it with the API server's audit log. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from webhook.admission import AdmissionRequest, AdmissionResponse
from webhook.cluster.view import ClusterView
from webhook.rules import Check, RuleResult, registry
from webhook.settings import Mode, Settings
from webhook.workloads import is_namespace

WARNING_LIMIT = 120


def _index() -> dict[tuple[str, str], tuple[Check, ...]]:
    index: dict[tuple[str, str], list[Check]] = {}
    for _, check, resources in registry():
        for resource in resources:
            index.setdefault(resource, []).append(check)
    return {resource: tuple(checks) for resource, checks in index.items()}


_RULES_BY_RESOURCE = _index()


@dataclass(frozen=True, slots=True)
class Decision:
    uid: str
    verdict: str  # allow | deny | warn | audit
    results: tuple[RuleResult, ...]
    annotations: Mapping[str, str]
    namespace: str
    exempt: str = ""  # why no rule ran, when none did
    failed: tuple[RuleResult, ...] = ()  # the results that did not pass

    @property
    def allowed(self) -> bool:
        return self.verdict != "deny"

    @property
    def mode(self) -> str:
        """The strongest mode among the failed rules ("" when none failed)."""
        modes = {r.mode for r in self.failed}
        return next((m.value for m in (Mode.ENFORCE, Mode.WARN, Mode.AUDIT) if m in modes), "")

    @property
    def message(self) -> str:
        return "\n".join(r.message for r in self.failed if r.mode is Mode.ENFORCE)

    @property
    def warnings(self) -> tuple[str, ...]:
        texts = (r.warning or r.message for r in self.failed if r.mode is Mode.WARN)
        return tuple(dict.fromkeys(_one_line(t) for t in texts))

    @property
    def confirm(self) -> str:
        """A namespace to re-read live before this answer stands ("" when none).

        A denial that rests on cached state (no fence seen) is re-checked so a late watch event
        does not refuse a valid request; an allowed removal of a fence is re-checked so a stale
        cache never lets the last fence go.
        """
        candidates = self.failed if not self.allowed else self.results
        return next((r.confirm for r in candidates if r.mode is Mode.ENFORCE and r.confirm), "")

    def response(self) -> AdmissionResponse:
        return AdmissionResponse(
            uid=self.uid,
            allowed=self.allowed,
            message=self.message,
            warnings=self.warnings,
            audit_annotations=self.annotations,
        )


def decide(request: AdmissionRequest, cluster: ClusterView, settings: Settings) -> Decision:
    namespace = subject_namespace(request)
    exempt = _exemption(request, namespace, cluster, settings)
    if exempt:
        return _decision(request, namespace, (), settings, exempt)
    checks = _RULES_BY_RESOURCE.get((request.resource.group, request.resource.resource), ())
    results: list[RuleResult] = []
    for check in checks:
        results.extend(check(request, cluster, settings))
    return _decision(request, namespace, tuple(results), settings, "")


def subject_namespace(request: AdmissionRequest) -> str:
    """The namespace a request is about; a Namespace object is about itself."""
    if is_namespace(request) and not request.namespace:
        meta = (request.target or {}).get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        return request.name or (name if isinstance(name, str) else "")
    return request.namespace


def _exemption(
    request: AdmissionRequest, namespace: str, cluster: ClusterView, settings: Settings
) -> str:
    exemptions = settings.exemptions
    if request.user.username in exemptions.users:
        return f'user "{request.user.username}" is exempt'
    group = next((g for g in request.user.groups if g in exemptions.groups), None)
    if group is not None:
        return f'group "{group}" is exempt'
    if namespace in exemptions.namespaces:
        return f'namespace "{namespace}" is exempt'
    facts = cluster.namespace(namespace) if namespace else None
    if facts is not None and facts.terminating:
        return f'namespace "{namespace}" is terminating'
    return ""


def _decision(
    request: AdmissionRequest,
    namespace: str,
    results: tuple[RuleResult, ...],
    settings: Settings,
    exempt: str,
) -> Decision:
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
    annotations = {
        "decision": verdict,
        "rules": ",".join(dict.fromkeys(r.rule for r in failed)),
        "decision-id": request.uid,
        "policy-revision": settings.revision,
    }
    return Decision(request.uid, verdict, results, annotations, namespace, exempt, failed)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    if len(line) <= WARNING_LIMIT:
        return line
    return line[: WARNING_LIMIT - 3].rstrip() + "..."
