"""`kubectl debug`: an UPDATE of pods/ephemeralcontainers is judged when it adds or changes one.

The API server sends the whole Pod as `object` and `oldObject`; the ratchet judges the new pod as
Pod Security Admission's `isSignificantPodUpdate` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from objects import deny_all, parse, pod_spec, workload_review

from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import Decision, decide
from webhook.netpol import analyse_policy
from webhook.registration import DEFAULT_RULES, is_registered
from webhook.settings import Settings

CLUSTER = StaticView(
    [
        namespace_facts("team", [analyse_policy(deny_all())]),
        namespace_facts("open"),
        namespace_facts("unaudited", [analyse_policy(deny_all(namespace="unaudited"))]),
    ]
)
DEBUG = {
    "name": "debugger-x7k2q",
    "image": "busybox:1.36",
    "stdin": True,
    "tty": True,
    "targetContainerName": "app",
}


def settings(tmp_path: Path | None = None) -> Settings:
    if tmp_path is None:
        return parse_settings("", "config.yaml", Path())
    (tmp_path / "audit.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "  - level: None\n    namespaces: [unaudited]\n  - level: Metadata\n"
    )
    return parse_settings("auditScope: {policyFile: audit.yaml}", "config.yaml", tmp_path)


def debug(
    namespace: str = "team",
    added: dict[str, Any] | None = None,
    s: Settings | None = None,
    **spec: Any,
) -> Decision:
    old = pod_spec(**spec)
    new = pod_spec(**spec, ephemeralContainers=[added or DEBUG])
    doc = workload_review(
        "Pod",
        "UPDATE",
        namespace=namespace,
        spec=new,
        old_spec=old,
        sub_resource="ephemeralcontainers",
    )
    return decide(parse(doc), CLUSTER, s or settings())


def test_the_chart_and_e2e_register_the_subresource() -> None:
    assert is_registered(DEFAULT_RULES, "UPDATE", "", "pods", "ephemeralcontainers")
    assert not is_registered(DEFAULT_RULES, "CREATE", "", "pods", "ephemeralcontainers")


def test_a_debug_container_in_an_unfenced_namespace_is_denied() -> None:
    decision = debug("open")
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "default-deny"
    assert 'namespace "open" is not fenced' in decision.message
    assert debug("team").verdict == "allow"


def test_an_update_that_adds_nothing_passes() -> None:
    spec = pod_spec(ephemeralContainers=[DEBUG])
    doc = workload_review(
        "Pod",
        "UPDATE",
        namespace="open",
        spec=spec,
        old_spec=spec,
        sub_resource="ephemeralcontainers",
    )
    decision = decide(parse(doc), CLUSTER, settings())
    assert decision.verdict == "allow"
    assert any("no ephemeral container added or changed" in r.message for r in decision.results)


def test_a_changed_ephemeral_container_is_judged() -> None:
    old = pod_spec(ephemeralContainers=[DEBUG])
    new = pod_spec(ephemeralContainers=[{**DEBUG, "image": "nicolaka/netshoot"}])
    doc = workload_review(
        "Pod",
        "UPDATE",
        namespace="open",
        spec=new,
        old_spec=old,
        sub_resource="ephemeralcontainers",
    )
    assert decide(parse(doc), CLUSTER, settings()).verdict == "deny"


def test_a_privileged_debug_container_in_a_host_pid_pod_is_denied() -> None:
    privileged = {**DEBUG, "securityContext": {"privileged": True}}
    decision = debug("team", privileged, hostPID=True)
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "host-network"
    assert (
        "spec.hostPID with spec.ephemeralContainers[0].securityContext.privileged"
        in decision.message
    )
    # Without hostPID it still has the node's devices (`kubectl debug --profile=sysadmin`).
    alone = debug("team", privileged)
    assert alone.verdict == "deny"
    assert "sets spec.ephemeralContainers[0].securityContext.privileged: a privileged" in (
        alone.message
    )


def test_a_debug_container_in_a_host_network_pod_is_on_the_nodes_network() -> None:
    decision = debug("team", hostNetwork=True)
    assert decision.verdict == "deny"
    assert "uses hostNetwork" in decision.message


def test_a_debug_container_on_a_pod_being_deleted_is_judged() -> None:
    old = pod_spec()
    doc = workload_review(
        "Pod",
        "UPDATE",
        namespace="open",
        spec=pod_spec(ephemeralContainers=[DEBUG]),
        old_spec=old,
        sub_resource="ephemeralcontainers",
    )
    doc["request"]["oldObject"]["metadata"]["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    assert decide(parse(doc), CLUSTER, settings()).verdict == "deny"


def test_a_debug_container_outside_the_audited_scope_is_denied(tmp_path: Path) -> None:
    decision = debug("unaudited", s=settings(tmp_path))
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "audit-scope"
    assert (
        'UPDATE of pods/ephemeralcontainers in namespace "unaudited" by "alice" is outside the '
        "audited scope" in decision.message
    )
    assert "`kubectl debug` sends patch" in decision.message
    assert debug("team", s=settings(tmp_path)).verdict == "allow"
