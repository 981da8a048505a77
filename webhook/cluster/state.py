"""The cluster state the informer keeps: per-namespace facts from Namespaces and NetworkPolicies.

Sans-I/O: fed plain objects (whole lists, single watch events), it returns the fence transitions
they caused; no sockets, no asyncio, no logging. `webhook.cluster.informer` feeds it from the API
server, tests feed it dicts.

Invariants:
- Only the facts decisions read are kept: per namespace its labels and whether it is terminating,
  per NetworkPolicy its `PolicyFacts` keyed by uid; never whole objects.
- Readers (the request path) call `ClusterState.get` without locks and never see half an update:
  a watch event swaps one immutable `NamespaceFacts` value, a (re-)list builds a whole new dict and
  swaps the reference, and every change is applied synchronously.
- The state is synced once both resources have been listed.
- The `TrustIndex` of label-trusting allow rules follows the facts: a namespace's entries are
  replaced whenever its facts are rebuilt, so a Namespace UPDATE is judged without a scan.
- Transitions (`lost` / `restored`) are returned for changes seen after the first full sync, never
  for the initial lists; `restored` only follows a `lost` this state saw, and a namespace being
  torn down (terminating, deleted) loses its fence silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from webhook.cluster.view import NamespaceFacts, namespace_facts, trust_entries
from webhook.label_trust import TrustIndex
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.netpol import DEFAULT_LIMITS, Direction, Limits, PolicyFacts, analyse_policy
from webhook.settings import Settings

_T = TypeVar("_T")


class Resource(StrEnum):
    NAMESPACES = "namespaces"
    NETWORK_POLICIES = "networkpolicies"


@dataclass(frozen=True, slots=True)
class NamespaceRecord:
    """What is kept of a Namespace object."""

    name: str
    labels: Mapping[str, str]
    terminating: bool


def namespace_record(obj: Mapping[str, Any]) -> NamespaceRecord:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    return NamespaceRecord(
        name=str(meta.get("name") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        terminating=status.get("phase") == "Terminating" or bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True, slots=True)
class Transition:
    """A namespace's fence for one direction, lost or restored, as the informer saw it."""

    event: str  # "lost" | "restored"
    namespace: str
    direction: Direction
    policy: str  # the policy (or policies, comma-separated) that made the difference
    resource_version: str


class ClusterState:
    """Per-namespace facts built from Namespace and NetworkPolicy objects; no I/O."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits  # what policies are analysed under (config `limits:` at start)
        self._records: dict[str, NamespaceRecord] = {}
        self._policies: dict[str, dict[str, PolicyFacts]] = {}
        self._facts: dict[str, NamespaceFacts] = {}
        self._listed: set[Resource] = set()
        self._lost: set[tuple[str, Direction]] = set()
        self._shapes = Shapes()
        self._refused: list[PolicyFacts] = []  # analysis refused since the last drain
        self._trust = TrustIndex()

    def get(self, name: str) -> NamespaceFacts | None:
        return self._facts.get(name)

    @property
    def label_trust(self) -> TrustIndex:
        return self._trust

    def policy(self, obj: Mapping[str, Any]) -> PolicyFacts:
        """A NetworkPolicy's facts, sharing equal parts with the policies already kept.

        A policy over a limit is kept unanalysed ("analysis refused"): it counts fail-closed,
        as unfenced for the directions it touches, and is reported by `drain_refused`.
        """
        facts = self._shapes.policy(analyse_policy(obj, self.limits))
        if facts.refused:
            self._refused.append(facts)
        return facts

    def drain_refused(self) -> list[PolicyFacts]:
        """The policies whose analysis was refused since the last call."""
        refused, self._refused = self._refused, []
        return refused

    def __len__(self) -> int:
        return len(self._facts)

    @property
    def synced(self) -> bool:
        return len(self._listed) == len(Resource)

    def replace_namespaces(
        self, records: Iterable[NamespaceRecord], resource_version: str, settings: Settings
    ) -> list[Transition]:
        """A full list of Namespaces replaces the previous one at once."""
        by_name = {r.name: r for r in records}
        return self._replace(
            Resource.NAMESPACES, by_name, self._policies, resource_version, settings
        )

    def replace_policies(
        self, policies: Iterable[PolicyFacts], resource_version: str, settings: Settings
    ) -> list[Transition]:
        """A full list of NetworkPolicies replaces the previous one at once."""
        by_namespace: dict[str, dict[str, PolicyFacts]] = {}
        for policy in policies:
            by_namespace.setdefault(policy.namespace, {})[_key(policy)] = policy
        return self._replace(
            Resource.NETWORK_POLICIES, self._records, by_namespace, resource_version, settings
        )

    def apply(
        self, resource: Resource, event: str, obj: Mapping[str, Any], settings: Settings
    ) -> list[Transition]:
        """One ADDED / MODIFIED / DELETED watch event; only its namespace's facts are rebuilt."""
        if resource is Resource.NAMESPACES:
            record = namespace_record(obj)
            name, policy_name = record.name, ""
            if event == "DELETED":
                self._records.pop(name, None)
            else:
                self._records[name] = record
        else:
            policy = self.policy(obj)
            name, policy_name = policy.namespace, policy.name
            bucket = self._policies.setdefault(name, {})
            if event == "DELETED":
                bucket.pop(_key(policy), None)
                if not bucket:
                    del self._policies[name]
            else:
                bucket[_key(policy)] = policy
        old = self._facts.get(name)
        new = self._build(name)
        if new is None:
            self._facts.pop(name, None)
        else:
            self._facts[name] = new
        if new is not old:
            self._trust.set(name, trust_entries(new))
        if not self.synced:
            return []
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        return self._transitions(
            name, old=old, new=new, policy=policy_name, version=version, settings=settings
        )

    def _replace(
        self,
        resource: Resource,
        records: dict[str, NamespaceRecord],
        policies: dict[str, dict[str, PolicyFacts]],
        resource_version: str,
        settings: Settings,
    ) -> list[Transition]:
        was_synced = self.synced
        before_records, before_policies = self._records, self._policies
        self._records, self._policies = records, policies
        old = self._facts
        new: dict[str, NamespaceFacts] = {}
        # A list replaces one resource; the other's dict is the very one the facts were built
        # from (events rebuild the facts they change), so it needs no comparing.
        same_records, same_policies = before_records is records, before_policies is policies
        for name in records.keys() | policies.keys():
            kept = old.get(name)
            if (
                kept is not None
                and (same_records or before_records.get(name) == records.get(name))
                and (same_policies or _same_versions(before_policies.get(name), policies.get(name)))
            ):
                new[name] = kept  # unchanged since the last list: a re-list stays cheap
                continue
            facts = self._build(name)
            if facts is not None:
                new[name] = facts
        self._facts = new
        for name in old.keys() | new.keys():
            if old.get(name) is not new.get(name):
                self._trust.set(name, trust_entries(new.get(name)))
        self._listed.add(resource)
        if not was_synced:
            return []
        return [
            t
            for name in sorted(old.keys() | new.keys())
            if old.get(name) is not new.get(name)
            for t in self._transitions(
                name,
                old=old.get(name),
                new=new.get(name),
                policy="",
                version=resource_version,
                settings=settings,
            )
        ]

    def _build(self, name: str) -> NamespaceFacts | None:
        record = self._records.get(name)
        policies = self._policies.get(name)
        if record is None and not policies:
            return None
        return namespace_facts(
            name,
            policies.values() if policies else (),
            labels=record.labels if record else {NAMESPACE_NAME_LABEL: name},
            terminating=record.terminating if record else False,
            limits=self.limits,
        )

    def _transitions(
        self,
        name: str,
        *,
        old: NamespaceFacts | None,
        new: NamespaceFacts | None,
        policy: str,
        version: str,
        settings: Settings,
    ) -> list[Transition]:
        found: list[Transition] = []
        for direction in settings.require:
            key = (name, direction)
            was = old is not None and old.fence(direction, settings.strict).fenced
            now = new is not None and new.fence(direction, settings.strict).fenced
            if new is None or new.terminating:
                self._lost.discard(key)  # torn down: nothing left to expose
            elif was and not now:
                self._lost.add(key)
                culprit = policy or _culprit(old, new, direction, settings.strict)
                found.append(Transition("lost", name, direction, culprit, version))
            elif now and not was and key in self._lost:
                self._lost.discard(key)
                culprit = policy or ",".join(new.fence(direction, settings.strict).fencing)
                found.append(Transition("restored", name, direction, culprit, version))
        return found


class Shapes:
    """One shared copy of each equal part of PolicyFacts (policy types, rule counts, reaches,
    pod selectors, sizes).

    Most policies are alike, so the state holds a handful of shapes instead of a copy per policy:
    less memory, and fewer objects for the garbage collector to walk (its pauses stall requests).
    """

    LIMIT = 100_000

    def __init__(self) -> None:
        self._seen: dict[Hashable, Any] = {}

    def policy(self, p: PolicyFacts) -> PolicyFacts:
        if len(self._seen) > self.LIMIT:
            self._seen.clear()  # forget unused shapes now and then; those in use stay alive
        return dataclasses.replace(
            p,
            namespace=self._one(p.namespace, p.namespace),
            types=self._one(p.types, p.types),
            rule_count=self._one(("count", *sorted(p.rule_count.items())), p.rule_count),
            reach=self._one(("reach", *sorted(p.reach.items())), p.reach),
            pod_selector=self._one(("selector", p.pod_selector), p.pod_selector),
            size=self._one(("size", p.size), p.size),
        )

    def _one(self, key: Hashable, value: _T) -> _T:
        kept: _T = self._seen.setdefault(key, value)
        return kept


def _key(policy: PolicyFacts) -> str:
    return policy.uid or f"{policy.namespace}/{policy.name}"


def _same_versions(
    a: Mapping[str, PolicyFacts] | None, b: Mapping[str, PolicyFacts] | None
) -> bool:
    """The same policies at the same resourceVersions (none known: not the same)."""
    a, b = a or {}, b or {}
    if a.keys() != b.keys():
        return False
    return all(
        p.resource_version and p.resource_version == b[k].resource_version for k, p in a.items()
    )


def _culprit(
    old: NamespaceFacts | None, new: NamespaceFacts, direction: Direction, strict: bool
) -> str:
    """Who took a fence away, seen only as before/after (a re-list): neutralisers, or the gone."""
    after = new.fence(direction, strict)
    if after.neutralised:
        return ",".join(after.neutralised_by)
    before = old.fence(direction, strict).fencing if old is not None else ()
    return ",".join(n for n in before if n not in after.fencing) or ",".join(before)
