"""The audit Event as Sigma selections: the registration, kubefence's annotations, exemptions.

What `detect.findings` reads of a record (`audit_reader.AuditRecord`), said as Sigma detection
items over the Event's JSON: the registration inverted from admission operations to audit verbs,
the decision, fence-lost and failed-open annotations of the configured webhook names, the exempt
namespaces, a dry run as the URI shows it. `webhook.correlate.sigma` builds its rules from these.

Invariants:
- Pure: options in, plain dicts out.
- A field is its JSON path, dot-joined; an annotation is `annotations.` and its key as the API
  server writes it, whose own dots and slash belong to the key (`field_path` splits it back).
- Every negated comparison of a field that may be absent is paired with `|exists: true` on the
  same field: SQL backends read a missing field as NULL, and `NOT (NULL = 'x')` is not true.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from webhook.controllers import NAMESPACE_CLEANERS
from webhook.correlate.audit_reader import (
    CONNECT_SUBRESOURCES,
    FAILED_OPEN_PREFIX,
    SENSITIVE,
    VERB_OPERATIONS,
)
from webhook.correlate.model import CorrelateOptions
from webhook.registration import WebhookRule

# The API server keys a failed-open annotation by the webhook's place among those it called
# (`round_0_index_<i>`: validating webhooks run in one round); a rule can only list the places.
DEFAULT_WEBHOOK_SLOTS = 10
WRITES = ("create", "update", "patch", "delete", "deletecollection")
# The verbs whose `dryRun` comes from the URI alone (a delete's body overrides its URI's).
QUERY_OPTION_VERBS = ("create", "update", "patch")
DRY_RUN_MARKS = ("\\?dryRun=All", "&dryRun=All")  # `?` is a Sigma wildcard unless escaped


def field_path(name: str) -> tuple[str, ...]:
    """The JSON path of a rule field: `annotations.<key>` is one key below `annotations`."""
    if name.startswith("annotations."):
        return ("annotations", name.removeprefix("annotations."))
    return tuple(name.split("."))


class Selections:
    """The selections the rules share, from one set of options."""

    def __init__(self, options: CorrelateOptions, slots: int) -> None:
        names = options.webhook_names
        self.names = names
        self.registered = registered(options.rules)
        # Any of our webhooks decided it: the decision-id annotation is there.
        self.decided = [{f"annotations.{n}/decision-id|exists": True} for n in names]
        self.failed_open = [
            {
                f"annotations.{FAILED_OPEN_PREFIX}round_0_index_{i}|exists": True,
                f"annotations.{FAILED_OPEN_PREFIX}round_0_index_{i}": list(names),
            }
            for i in range(slots)
        ]
        self.fence_lost = [
            {
                f"annotations.{n}/fence-lost|exists": True,
                f"annotations.{n}/fence-lost|contains": ["Ingress", "Egress"],
            }
            for n in names
        ]
        exempt = sorted(options.exempt_namespaces)
        self.exempt: list[dict[str, Any]] = []
        if exempt:
            self.exempt = [
                {"objectRef.namespace|exists": True, "objectRef.namespace": exempt},
                {  # a Namespace object is judged as its own namespace
                    "objectRef.apiGroup": None,
                    "objectRef.resource": "namespaces",
                    "objectRef.name|exists": True,
                    "objectRef.name": exempt,
                },
            ]
        self.admitted = [{"responseStatus.code|lt": 400}, {"responseStatus.code": None}]
        # Written before admission: no annotations and no code yet, never judged.
        self.received = {"stage": "RequestReceived"}
        # The namespace controller's deletecollection of an empty collection calls no webhook.
        self.cleaners = {
            "verb": "deletecollection",
            "user.username|exists": True,
            "user.username": sorted(NAMESPACE_CLEANERS),
        }
        self.dry_run = {
            "verb": list(QUERY_OPTION_VERBS),
            "requestURI|contains": list(DRY_RUN_MARKS),
        }

    def judged(self, detection: dict[str, Any], condition: str) -> dict[str, Any]:
        """`detection` with the stage and exemption filters every judged event passes."""
        detection = {**detection, "received": self.received}
        condition = f"({condition}) and not received"
        if self.exempt:
            detection["exempt"] = self.exempt
            condition += " and not exempt"
        return {**detection, "condition": condition}


def registered(rules: Sequence[WebhookRule]) -> list[dict[str, Any]]:
    """The registration as audit fields: one entry per group, subresource and verbs.

    Inverse of `audit_reader.operations`: CREATE is create or patch (a server-side apply that
    creates), UPDATE update or patch, DELETE delete or deletecollection, CONNECT create or get on
    exec, attach and portforward and every verb on a proxy.
    """
    merged: dict[tuple[Any, ...], list[str]] = {}
    for rule in rules:
        for pattern in rule.resources:
            resource, _, sub = pattern.partition("/")
            verbs = verbs_of(rule.operations, sub)
            if verbs == ():
                continue
            for group in rule.api_groups:
                key = (group, sub, verbs)
                merged.setdefault(key, [])
                if resource not in merged[key]:
                    merged[key].append(resource)
    entries = []
    for (group, sub, verbs), resources in merged.items():
        entry: dict[str, Any] = {}
        if group != "*":
            entry["objectRef.apiGroup"] = group or None  # the core group is written as no field
        if "*" not in resources:
            entry["objectRef.resource"] = resources if len(resources) > 1 else resources[0]
        if sub == "":
            entry["objectRef.subresource"] = None
        elif sub != "*":
            entry["objectRef.subresource"] = sub
        else:
            entry["objectRef.subresource|exists"] = True
        if verbs is not None:
            entry["verb"] = list(verbs)
        entries.append(entry)
    return entries


def verbs_of(operations: Iterable[str], sub: str) -> tuple[str, ...] | None:
    """The audit verbs of `operations` on a subresource; None: every verb (a proxy)."""
    if "*" in operations:
        return None
    verbs: list[str] = []
    for op in operations:
        if op == "CONNECT":
            if sub in {"proxy", "*"}:
                return None
            if sub in CONNECT_SUBRESOURCES:
                verbs += ["create", "get"]
        else:
            verbs += [v for v, ops in VERB_OPERATIONS.items() if op in ops]
    return tuple(sorted(set(verbs)))


def policy_write(verbs: Sequence[str]) -> dict[str, Any]:
    return {
        "objectRef.apiGroup": "networking.k8s.io",
        "objectRef.resource": "networkpolicies",
        "verb": list(verbs),
    }


def tunnels() -> list[dict[str, Any]]:
    """The API server's tunnels into pods and nodes, and debug containers (`SENSITIVE`)."""
    by_sub: dict[str, list[str]] = {}
    for resource, sub in sorted(SENSITIVE):
        by_sub.setdefault(sub, []).append(resource)
    return [
        {
            "objectRef.apiGroup": None,
            "objectRef.resource": resources if len(resources) > 1 else resources[0],
            "objectRef.subresource": sub,
        }
        for sub, resources in by_sub.items()
    ]
