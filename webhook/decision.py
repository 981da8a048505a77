"""`Decision`: one answer of the decision core, and the fields of its decision-log line.

A `Decision` carries everything the shell needs: the response (with the audit annotations that
join it with the API server's audit log), the `Recheck` to carry out before it stands (re-read a
namespace live, then `decide.reconsider`), and the policy change to remember if the answer
stands. `decision_fields` is its `admission.decision` line; the field names are a contract
(docs/design.md, "Decision log") that `kubefence correlate` and users' pipelines read, and
`webhook.decisionlog` only writes them. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.admission import AdmissionRequest, AdmissionResponse
from webhook.netpol import PolicyFacts
from webhook.rules import Rule
from webhook.rules.result import RuleResult
from webhook.settings import Mode
from webhook.subject import Subject
from webhook.workloads import is_network_policy

WARNING_LIMIT = 120


@dataclass(frozen=True, slots=True)
class Approval:
    """A NetworkPolicy change this answer lets through: `old` goes (DELETE, UPDATE), `new`
    comes (CREATE, UPDATE)."""

    namespace: str
    old: PolicyFacts | None
    new: PolicyFacts | None


@dataclass(frozen=True, slots=True)
class Recheck:
    """What an answer that rests on cached state needs before it stands: read `namespace` live,
    then `reconsider` on that view (`unconfirmed` when the read fails or is late)."""

    namespace: str
    # Only a read started after the request arrived will do: no remembered or shared one.
    fresh_only: bool


@dataclass(frozen=True, slots=True)
class Decision:
    uid: str
    verdict: str  # allow | deny | warn | audit
    results: tuple[RuleResult, ...]
    annotations: Mapping[str, str]
    namespace: str
    exempt: str = ""  # why no rule ran, when none did
    failed: tuple[RuleResult, ...] = ()  # the results that did not pass
    name: str = ""  # the object's name, for the decision log
    approval: Approval | None = None  # to remember until the cluster view shows it
    # What `reconsider` needs: the subject, and the results of each rule that judged it.
    subject: Subject | None = None
    by_rule: tuple[tuple[Rule, tuple[RuleResult, ...]], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.verdict != "deny"

    @property
    def mode(self) -> str:
        """The strongest mode among the failed rules ("" when none failed)."""
        if not self.failed:  # the common case: nothing to look through
            return ""
        modes = {r.mode for r in self.failed}
        return next((m.value for m in (Mode.ENFORCE, Mode.WARN, Mode.AUDIT) if m in modes), "")

    @property
    def message(self) -> str:
        if not self.failed:
            return ""
        return "\n".join(r.message for r in self.failed if r.mode is Mode.ENFORCE)

    @property
    def warnings(self) -> tuple[str, ...]:
        if not self.failed:
            return ()
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

    @property
    def recheck(self) -> Recheck | None:
        """The live re-check this answer needs before it stands, None when it stands as is.

        A workload's denial may be lifted on a read shared with others of the last second (only
        fence removals pass with a `confirm`, and only NetworkPolicy requests remove fences); a
        NetworkPolicy change is judged on a read made for this request: a remembered one may
        predate a Pod created, or an opener deleted, since.
        """
        namespace = self.confirm
        if not namespace:
            return None
        policy = self.subject is not None and is_network_policy(self.subject.request)
        return Recheck(namespace, fresh_only=self.allowed or policy)

    def response(self) -> AdmissionResponse:
        return AdmissionResponse(
            uid=self.uid,
            allowed=self.allowed,
            message=self.message,
            warnings=self.warnings,
            audit_annotations=self.annotations,
        )


def decision_fields(
    request: AdmissionRequest,
    decision: Decision,
    *,
    cache_synced: bool,
    latency_ms: float,
    client: str | None = None,
    peer: str | None = None,
) -> dict[str, Any]:
    """The fields of one `admission.decision` line (the caller adds the event name and level)."""
    fields: dict[str, Any] = {
        "decision_id": request.uid,
        "decision": decision.verdict,
        "allowed": decision.allowed,
        "mode": decision.mode,
        "rules": [
            {
                "id": r.rule,
                "result": "pass" if r.passed else "fail",
                "mode": r.mode.value,
                "message": r.message,
            }
            for r in decision.results
        ],
        "operation": request.operation,
        "dry_run": request.dry_run,
        "kind": str(request.kind),
        "resource": _resource(request),
        "subresource": request.sub_resource,
        "namespace": decision.namespace,
        "name": decision.name,
        "user": request.user.username,
        "groups": list(request.user.groups),
        "audit_annotations": dict(decision.annotations),
        "policy_revision": decision.annotations.get("policy-revision", ""),
        "cache_synced": cache_synced,
        "latency_ms": round(latency_ms, 3),
    }
    if decision.exempt:
        fields["exempt"] = decision.exempt
    if client:
        fields["client"] = client
    if peer:
        fields["peer"] = peer
    return fields


def _resource(request: AdmissionRequest) -> str:
    group = request.resource.group
    return f"{group}/{request.resource.resource}" if group else request.resource.resource


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    if len(line) <= WARNING_LIMIT:
        return line
    return line[: WARNING_LIMIT - 3].rstrip() + "..."
