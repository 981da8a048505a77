"""The subject of one admission request: what the rules read of it, computed once per request.

As Pod Security Admission's `admission.go` does, the pod template is extracted and the UPDATE
ratchet decided before any rule runs, and a NetworkPolicy change has its old and new objects
analysed once; each rule receives the subject and reads only what it needs. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from webhook.admission import AdmissionRequest
from webhook.netpol import (
    DEFAULT_LIMITS,
    Direction,
    DirectionFence,
    Limits,
    PolicyFacts,
    analyse_policy,
    fence_for,
)
from webhook.workloads import (
    is_namespace,
    is_network_policy,
    is_workload,
    pod_spec,
    pod_spec_path,
    pod_template,
    ratchet,
)

T = TypeVar("T")


class Precomputed(Protocol):
    """A namespace's policies with their fences computed when it changed (`NamespaceFacts`)."""

    @property
    def policies(self) -> tuple[PolicyFacts, ...]: ...

    @property
    def limits(self) -> Limits: ...

    def fence(self, direction: Direction, strict: bool) -> DirectionFence: ...


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A NetworkPolicy request's objects, each analysed once: `old` is `oldObject` (UPDATE,
    DELETE), `new` is `object` on CREATE and UPDATE; None where the review carries none."""

    old: PolicyFacts | None
    new: PolicyFacts | None


@dataclass(frozen=True, slots=True)
class WorkloadChange:
    """A workload request's pod spec (of `object`) and the UPDATE ratchet's verdict."""

    spec: Mapping[str, Any]
    judged: bool
    why_not: str  # why the ratchet lets it pass unjudged ("" when judged)
    spec_path: str = "spec"  # where `spec` lies in the object, for messages naming a field


@dataclass(frozen=True, slots=True)
class Subject:
    request: AdmissionRequest
    namespace: str  # the namespace the request is about; a Namespace object is about itself
    name: str  # the object's name: the URL's, else the object's name or generateName
    workload: WorkloadChange | None = None
    policy: PolicyChange | None = None
    # Results of pure evaluations a rule may need again when the shell re-decides on a live read
    # (the audit Policy's levels): computed at most once per request.
    _memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    def once(self, key: object, compute: Callable[[], T]) -> T:
        """`compute()` the first time `key` is asked for in this request, the same value after."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[return-value]

    def fence(
        self,
        policies: Iterable[PolicyFacts],
        direction: Direction,
        *,
        strict: bool,
        limits: Limits,
        facts: Precomputed | None = None,
    ) -> DirectionFence:
        """`netpol.fence_for`, computed once per request for each set of policies: the fence
        guard, `allow-all` and the `fence-lost` annotation pool the same namespace. Keyed by the
        policies' identities (order does not change a fence), which stay valid because the memo
        keeps the policies alive. When `policies` is the very tuple of the namespace's `facts`,
        the fence they computed when the cluster changed is the answer: nothing is pooled."""
        if facts is not None and policies is facts.policies and facts.limits == limits:
            return facts.fence(direction, strict)
        pool = tuple(policies)
        key = ("fence", frozenset(map(id, pool)), direction, strict, limits)
        _, fence = self.once(
            key, lambda: (pool, fence_for(pool, direction, strict=strict, limits=limits))
        )
        return fence


def subject_of(request: AdmissionRequest, limits: Limits = DEFAULT_LIMITS) -> Subject:
    """Extract once what the rules read: the pod template (and the ratchet), or the policies
    (analysed under `limits`)."""
    workload = policy = None
    if is_workload(request):
        template = pod_template(request, request.object)
        old_template = (
            pod_template(request, request.old_object) if request.operation == "UPDATE" else None
        )
        judged, why_not = ratchet(request, template, old_template)
        workload = WorkloadChange(pod_spec(template), judged, why_not, pod_spec_path(request))
    elif is_network_policy(request):
        policy = policy_change(request, limits)
    return Subject(request, subject_namespace(request), object_name(request), workload, policy)


def policy_change(request: AdmissionRequest, limits: Limits = DEFAULT_LIMITS) -> PolicyChange:
    old = request.old_object
    new = request.object if request.operation in ("CREATE", "UPDATE") else None
    return PolicyChange(
        analyse_policy(old, limits) if old is not None else None,
        analyse_policy(new, limits) if new is not None else None,
    )


def subject_namespace(request: AdmissionRequest) -> str:
    """The namespace a request is about; a Namespace object is about itself."""
    if is_namespace(request) and not request.namespace:
        meta = (request.target or {}).get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        return request.name or (name if isinstance(name, str) else "")
    return request.namespace


def object_name(request: AdmissionRequest) -> str:
    """The URL's name, else the target object's name or generateName (a POST create has none)."""
    if request.name:
        return request.name
    target = request.target
    meta = target.get("metadata") if isinstance(target, Mapping) else None
    if isinstance(meta, Mapping):
        name = meta.get("name") or meta.get("generateName")
        if isinstance(name, str):
            return name
    return ""
