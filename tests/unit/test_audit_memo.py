"""audit-scope's remembered audit Policy answers are the answers the Policy gives afresh."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from objects import parse, workload_review

from webhook.auditpolicy import Level, load_policy
from webhook.rules import audit_scope

NAMED = """apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    resources: [{group: apps, resources: [deployments], resourceNames: [blind]}]
  - level: None
    users: [mallory]
  - level: Metadata
    namespaces: [team]
    verbs: [create, update]
  - level: Request
    omitStages: [ResponseComplete]
"""
UNNAMED = Path(__file__).resolve().parents[1] / "e2e" / "audit-policy.yaml"


@pytest.mark.parametrize("policy_text", [NAMED, UNNAMED.read_text()], ids=["named", "e2e"])
def test_remembered_answers_are_fresh_answers(policy_text: str) -> None:
    policy = load_policy(policy_text, "policy.yaml")
    audit_scope._MEMO.clear()
    cases = list(
        itertools.product(
            ("CREATE", "UPDATE"),
            ("web", "blind", ""),
            ("team", "unaudited", "patch-blind"),
            ("alice", "mallory"),
            (Level.METADATA, Level.REQUEST),
        )
    )
    for _ in range(2):  # the second pass answers from the memo
        for operation, name, namespace, user, minimum in cases:
            doc = workload_review("Deployment", operation, namespace=namespace, uid="u")
            doc["request"]["name"] = name
            doc["request"]["userInfo"]["username"] = user
            request = parse(doc)
            expected = audit_scope.out_of_scope_verbs(request, policy, minimum)
            assert audit_scope._remembered(request, policy, minimum) == expected
    # The three names share one answer where no rule of the Policy names deployments.
    names_matter = "resourceNames: [blind]" in policy_text
    assert len(audit_scope._MEMO) == len(cases) // (1 if names_matter else 3)


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = load_policy(NAMED, "policy.yaml")
    monkeypatch.setattr(audit_scope, "MEMO_LIMIT", 3)
    audit_scope._MEMO.clear()
    for user in ("a", "b", "c", "d", "e"):
        doc = workload_review("Deployment", uid="u")
        doc["request"]["userInfo"]["username"] = user
        audit_scope._remembered(parse(doc), policy, Level.METADATA)
        assert len(audit_scope._MEMO) <= 3
