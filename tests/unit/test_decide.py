"""The fence rules and their combination, as a user sees them: allowed or not, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from objects import (
    WORKLOAD_GVR,
    deny_all,
    netpol,
    netpol_review,
    parse,
    pod_spec,
    review,
    workload,
    workload_review,
)

from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import decide
from webhook.netpol import analyse_policy
from webhook.settings import Settings


def cluster(
    *policies: dict[str, Any],
    namespace: str = "team",
    terminating: bool = False,
    running_pods: int | None = 3,
) -> StaticView:
    facts = namespace_facts(
        namespace,
        [analyse_policy(p) for p in policies],
        terminating=terminating,
        running_pods=running_pods,
    )
    return StaticView([facts, namespace_facts("open")])


def settings(text: str = "") -> Settings:
    return parse_settings(text, "config.yaml", Path())


FENCED = cluster(deny_all())
UNFENCED = cluster()
DEFAULTS = settings()


@pytest.mark.parametrize("kind", sorted(WORKLOAD_GVR))
def test_every_workload_kind_is_denied_in_an_unfenced_namespace(kind: str) -> None:
    decision = decide(parse(workload_review(kind)), UNFENCED, DEFAULTS)
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "default-deny"
    assert 'namespace "team" is not fenced for Ingress and Egress' in decision.message
    assert "kind: NetworkPolicy" in decision.message  # the manifest that fixes it
    assert decide(parse(workload_review(kind)), FENCED, DEFAULTS).verdict == "allow"


def test_the_denial_names_only_the_missing_direction() -> None:
    decision = decide(
        parse(workload_review("Deployment")), cluster(netpol(types=["Ingress"])), DEFAULTS
    )
    assert "not fenced for Egress:" in decision.message
    assert "policyTypes: [Egress]" in decision.message


def test_a_neutralised_fence_is_named_in_the_denial() -> None:
    opener = netpol("open-all", types=["Ingress"], ingress=[{}])
    decision = decide(parse(workload_review("Pod")), cluster(deny_all(), opener), DEFAULTS)
    assert decision.verdict == "deny"
    assert (
        "neutralised by NetworkPolicy open-all, which lets every peer in: narrow or delete it"
    ) in decision.message
    # Another default-deny would not help: none is offered.
    assert "Apply this NetworkPolicy" not in decision.message
    (failure,) = decision.failed
    assert (
        failure.warning == 'namespace "team" has its Ingress default-deny neutralised by open-all'
    )


def test_the_suggested_policy_never_replaces_an_existing_one() -> None:
    # `default-deny` fences Ingress only: applying a manifest of that name for Egress would drop
    # the Ingress fence. The hint takes a name the namespace does not use.
    taken = netpol("default-deny", types=["Ingress"]), netpol("kubefence-default-deny", types=[])
    decision = decide(parse(workload_review("Deployment")), cluster(*taken), DEFAULTS)
    assert "  name: kubefence-default-deny-2\n" in decision.message
    assert "policyTypes: [Egress]" in decision.message
    (failure,) = decision.failed
    assert failure.warning == 'namespace "team" has no default-deny NetworkPolicy for Egress'


def test_the_denial_and_scan_fix_give_the_same_remedy(tmp_path: Path) -> None:
    from webhook.cluster.static import load_state
    from webhook.findings.judge import scan
    from webhook.findings.render import fix_manifests

    (tmp_path / "state.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n"
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: default-deny, namespace: team}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n"
    )
    view = load_state(tmp_path)
    decision = decide(parse(workload_review("Pod")), view, DEFAULTS)
    manifest = decision.message.split("Apply this NetworkPolicy")[1].split("\n", 1)[1]
    facts = [f for f in map(view.namespace, view.names()) if f is not None]
    assert manifest in fix_manifests(scan(facts, view, DEFAULTS))


def test_before_the_first_sync_a_denial_says_the_view_is_not_synced() -> None:
    class Unsynced(StaticView):
        @property
        def synced(self) -> bool:
            return False

    decision = decide(parse(workload_review("Pod")), Unsynced([]), DEFAULTS)
    assert decision.verdict == "deny"
    assert "has not finished its first sync" in decision.message
    assert "Apply this" not in decision.message
    assert decision.confirm == "team"  # a live read may still allow it


def test_require_ingress_only() -> None:
    decision = decide(
        parse(workload_review("Pod")),
        cluster(netpol(types=["Ingress"])),
        settings("defaultDeny: {require: [Ingress]}"),
    )
    assert decision.verdict == "allow"


def test_unknown_namespace_is_unfenced_and_asks_for_a_live_read() -> None:
    decision = decide(parse(workload_review("Pod", namespace="new")), FENCED, DEFAULTS)
    assert decision.verdict == "deny"
    assert decision.confirm == "new"


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        pytest.param(
            workload_review("Deployment", "DELETE", old_spec=pod_spec()), "DELETE", id="delete"
        ),
        pytest.param(
            workload_review("Deployment", "UPDATE", sub_resource="scale"), "subresource", id="scale"
        ),
        pytest.param(
            workload_review(
                "Deployment",
                "UPDATE",
                sub_resource="status",
                spec=pod_spec(hostNetwork=True),
                old_spec=pod_spec(),
            ),
            "subresource",
            id="status",
        ),
        pytest.param(
            workload_review("Pod", "UPDATE", sub_resource="ephemeralcontainers"),
            "subresource",
            id="ephemeral",
        ),
        pytest.param(
            workload_review("Deployment", "UPDATE"), "no pod template change", id="metadata only"
        ),
    ],
)
def test_update_ratchet_lets_controllers_work_in_unfenced_namespaces(
    doc: dict[str, Any], why: str
) -> None:
    decision = decide(parse(doc), UNFENCED, DEFAULTS)
    assert decision.verdict == "allow"
    assert (
        any(why in r.message for r in decision.results) or doc["request"]["operation"] == "DELETE"
    )


def test_update_of_an_object_being_deleted_passes() -> None:
    doc = workload_review("Job", "UPDATE", spec=pod_spec(image="x"), old_spec=pod_spec())
    doc["request"]["oldObject"]["metadata"]["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    assert decide(parse(doc), UNFENCED, DEFAULTS).verdict == "allow"


def test_pod_template_change_is_judged() -> None:
    changed = pod_spec(containers=[{"name": "app", "image": "registry.example/app:2"}])
    doc = workload_review("Deployment", "UPDATE", spec=changed, old_spec=pod_spec())
    assert decide(parse(doc), UNFENCED, DEFAULTS).verdict == "deny"
    assert decide(parse(doc), FENCED, DEFAULTS).verdict == "allow"


def test_pod_label_edit_is_not_a_template_change() -> None:
    doc = workload_review("Pod", "UPDATE")
    doc["request"]["object"]["metadata"]["labels"] = {"new": "label"}
    assert decide(parse(doc), UNFENCED, DEFAULTS).verdict == "allow"


def test_a_terminating_namespace_exempts_only_the_namespace_controllers_deletions() -> None:
    # The namespace controller empties it: its deletecollection of the fence passes unjudged,
    # as the controller manager's own user (without service-account credentials) too.
    for cleaner in (
        "system:serviceaccount:kube-system:namespace-controller",
        "system:kube-controller-manager",
    ):
        doc = netpol_review("DELETE", old=OLD, name="", user=cleaner)
        decision = decide(parse(doc), cluster(OLD, terminating=True), DEFAULTS)
        assert decision.verdict == "allow"
        assert decision.exempt == 'namespace "team" is terminating'
    # Anyone else's write is judged as anywhere: its Pods may still run for their grace period.
    decision = decide(parse(workload_review("Pod")), cluster(terminating=True), DEFAULTS)
    assert decision.verdict == "deny"
    assert decision.exempt == ""


def test_exec_and_ephemeral_containers_are_judged_in_a_terminating_namespace(
    tmp_path: Path,
) -> None:
    (tmp_path / "audit.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "  - level: None\n    resources: [{group: '', resources: [pods/exec, pods/ephemeralcontainers]}]\n"
        "  - level: Metadata\n"
    )
    audited = parse_settings(
        "auditScope: {policyFile: audit.yaml}", str(tmp_path / "config.yaml"), tmp_path
    )
    exec_doc = review(
        "CONNECT",
        ("", "v1", "pods"),
        "PodExecOptions",
        name="web-0",
        sub_resource="exec",
        obj={"kind": "PodExecOptions"},
    )
    pod = workload(
        "Pod", spec=pod_spec(ephemeralContainers=[{"name": "debug", "image": "busybox"}])
    )
    debug = review(
        "UPDATE",
        ("", "v1", "pods"),
        "Pod",
        name="app",
        sub_resource="ephemeralcontainers",
        obj=pod,
        old=workload("Pod"),
    )
    for doc in (exec_doc, debug):
        for view in (FENCED, cluster(deny_all(), terminating=True)):
            decision = decide(parse(doc), view, audited)
            assert decision.verdict == "deny", doc["request"]["subResource"]
            assert decision.annotations["rules"] == "audit-scope"


def test_other_kinds_are_not_in_scope() -> None:
    doc = review("CREATE", ("", "v1", "configmaps"), "ConfigMap", obj={"metadata": {"name": "c"}})
    decision = decide(parse(doc), UNFENCED, DEFAULTS)
    assert decision.verdict == "allow"
    assert decision.results == ()


def test_namespace_create_is_allowed_with_one_warning() -> None:
    doc = review(
        "CREATE",
        ("", "v1", "namespaces"),
        "Namespace",
        namespace="",
        obj={"metadata": {"name": "shop"}},
    )
    decision = decide(parse(doc), UNFENCED, DEFAULTS)
    assert decision.allowed
    assert decision.verdict == "warn"
    assert decision.annotations["rules"] == "default-deny"
    assert decision.warnings == (
        'namespace "shop": workloads will be denied until it has a default-deny NetworkPolicy for Ingress, Egress',
    )


@pytest.mark.parametrize("config", ["defaultDeny: {mode: off}", "exemptions: {namespaces: [shop]}"])
def test_namespace_create_says_nothing_when_the_rule_is_off_or_exempt(config: str) -> None:
    doc = review(
        "CREATE",
        ("", "v1", "namespaces"),
        "Namespace",
        namespace="",
        obj={"metadata": {"name": "shop"}},
    )
    assert decide(parse(doc), UNFENCED, settings(config)).verdict == "allow"


# --- evasion guard ------------------------------------------------------------------------------

OLD = deny_all("a-oldest", created="2026-01-01T00:00:00Z")
NEW = deny_all("b-newer", created="2026-02-01T00:00:00Z")


def test_deleting_the_last_fence_is_denied() -> None:
    decision = decide(parse(netpol_review("DELETE", old=OLD)), cluster(OLD), DEFAULTS)
    assert decision.verdict == "deny"
    assert (
        'deleting NetworkPolicy "a-oldest" would leave namespace "team" unfenced for Ingress and Egress'
        in decision.message
    )


def test_a_newer_fence_may_go_while_an_older_one_stays() -> None:
    assert (
        decide(parse(netpol_review("DELETE", old=NEW)), cluster(OLD, NEW), DEFAULTS).verdict
        == "allow"
    )


def test_the_oldest_fence_goes_last_so_two_concurrent_removals_cannot_both_pass() -> None:
    decision = decide(parse(netpol_review("DELETE", old=OLD)), cluster(OLD, NEW), DEFAULTS)
    assert decision.verdict == "deny"
    assert "Newer fences (b-newer) may go instead" in decision.message


def test_same_timestamp_is_ordered_by_name() -> None:
    a = deny_all("a", created="2026-01-01T00:00:00Z")
    b = deny_all("b", created="2026-01-01T00:00:00Z")
    assert decide(parse(netpol_review("DELETE", old=b)), cluster(a, b), DEFAULTS).verdict == "allow"
    assert decide(parse(netpol_review("DELETE", old=a)), cluster(a, b), DEFAULTS).verdict == "deny"


def test_deletecollection_item_has_an_empty_name_and_is_judged_by_old_object() -> None:
    doc = netpol_review("DELETE", old=OLD, name="")
    assert parse(doc).name == ""
    assert decide(parse(doc), cluster(OLD), DEFAULTS).verdict == "deny"


def test_deleting_a_policy_that_fences_nothing_is_allowed() -> None:
    allow = netpol("allow-web", selector={"matchLabels": {"app": "web"}}, ingress=[{}])
    assert (
        decide(parse(netpol_review("DELETE", old=allow)), cluster(OLD, allow), DEFAULTS).verdict
        == "allow"
    )


def test_teardown_a_namespace_without_running_pods_may_drop_its_fence() -> None:
    decision = decide(
        parse(netpol_review("DELETE", old=OLD)), cluster(OLD, running_pods=0), DEFAULTS
    )
    assert decision.verdict == "allow"


def test_terminating_namespace_drops_its_fence_by_the_namespace_controller_only() -> None:
    terminating = cluster(OLD, terminating=True)
    cleaner = "system:serviceaccount:kube-system:namespace-controller"
    by_controller = netpol_review("DELETE", old=OLD, user=cleaner)
    assert decide(parse(by_controller), terminating, DEFAULTS).verdict == "allow"
    # A user's delete of the last fence while Pods still run is the guard's, as anywhere ...
    by_user = decide(parse(netpol_review("DELETE", old=OLD)), terminating, DEFAULTS)
    assert by_user.verdict == "deny"
    assert "it is the oldest policy fencing them" in by_user.message
    # ... and passes by teardown once none runs.
    gone = cluster(OLD, terminating=True, running_pods=0)
    assert decide(parse(netpol_review("DELETE", old=OLD)), gone, DEFAULTS).verdict == "allow"


def test_update_that_keeps_the_fence_is_allowed_and_one_that_drops_a_direction_is_not() -> None:
    keep = deny_all("a-oldest")
    keep["spec"]["ingress"] = [{"from": [{"podSelector": {}}]}]
    assert (
        decide(parse(netpol_review("UPDATE", new=keep, old=OLD)), cluster(OLD), DEFAULTS).verdict
        == "allow"
    )
    drop = netpol("a-oldest", types=["Ingress"])
    decision = decide(parse(netpol_review("UPDATE", new=drop, old=OLD)), cluster(OLD), DEFAULTS)
    assert decision.verdict == "deny"
    assert "unfenced for Egress" in decision.message


def test_a_namespace_that_was_not_fenced_loses_nothing() -> None:
    ingress_only = netpol(types=["Ingress"])
    decision = decide(
        parse(netpol_review("DELETE", old=ingress_only)),
        cluster(ingress_only),
        settings("defaultDeny: {require: [Egress]}"),
    )
    assert decision.verdict == "allow"


# --- allow-all ----------------------------------------------------------------------------------


def test_policy_that_neutralises_a_fence_is_denied() -> None:
    opener = netpol("allow-everything", types=["Ingress"], ingress=[{}])
    decision = decide(parse(netpol_review("CREATE", new=opener)), cluster(OLD), DEFAULTS)
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "allow-all"
    assert "neutralise the default-deny" in decision.message


def test_second_half_of_the_address_space_is_the_one_denied() -> None:
    low = netpol("low", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]}])
    high = netpol("high", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "128.0.0.0/1"}}]}])
    assert (
        decide(parse(netpol_review("CREATE", new=low)), cluster(OLD), DEFAULTS).verdict == "allow"
    )
    assert (
        decide(parse(netpol_review("CREATE", new=high)), cluster(OLD, low), DEFAULTS).verdict
        == "deny"
    )


def test_update_that_widens_a_policy_to_everyone_is_denied() -> None:
    narrow = netpol(
        "web",
        types=["Ingress"],
        ingress=[{"ports": [{"port": 443}]}],
        created="2026-03-01T00:00:00Z",
    )
    wide = netpol("web", types=["Ingress"], ingress=[{}], created="2026-03-01T00:00:00Z")
    assert (
        decide(
            parse(netpol_review("UPDATE", new=wide, old=narrow)), cluster(OLD, narrow), DEFAULTS
        ).verdict
        == "deny"
    )


def test_selected_pods_opened_to_every_peer_warn_by_default() -> None:
    web = netpol(
        "web-open", selector={"matchLabels": {"app": "web"}}, types=["Ingress"], ingress=[{}]
    )
    decision = decide(parse(netpol_review("CREATE", new=web)), cluster(OLD), DEFAULTS)
    assert decision.verdict == "warn"
    assert decision.allowed
    assert decision.warnings == (
        'NetworkPolicy "web-open" opens the pods it selects to every peer for Ingress; anyone who can label a pod can use it',
    )


# --- host network -------------------------------------------------------------------------------


def test_host_network_is_denied_even_in_a_fenced_namespace() -> None:
    decision = decide(
        parse(workload_review("DaemonSet", spec=pod_spec(hostNetwork=True))), FENCED, DEFAULTS
    )
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "host-network"


def test_host_port_warns_for_init_containers_too() -> None:
    spec = pod_spec(
        initContainers=[
            {"name": "init", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}
        ]
    )
    decision = decide(parse(workload_review("Pod", spec=spec)), FENCED, DEFAULTS)
    assert decision.verdict == "warn"
    assert "hostPort init:8080" in decision.warnings[0]


# --- modes, overrides, exemptions ---------------------------------------------------------------


def test_warn_mode_allows_with_short_one_line_warnings() -> None:
    decision = decide(
        parse(workload_review("Pod")), UNFENCED, settings("defaultDeny: {mode: warn}")
    )
    assert decision.allowed
    assert decision.verdict == "warn"
    assert all(len(w) <= 120 and "\n" not in w for w in decision.warnings)
    assert decision.response().warnings == decision.warnings


def test_audit_mode_allows_silently_but_annotates() -> None:
    decision = decide(
        parse(workload_review("Pod")), UNFENCED, settings("defaultDeny: {mode: audit}")
    )
    assert decision.allowed
    assert decision.verdict == "audit"
    assert decision.warnings == ()
    assert decision.annotations["rules"] == "default-deny"


def test_off_mode_skips_the_rule() -> None:
    decision = decide(parse(workload_review("Pod")), UNFENCED, settings("defaultDeny: {mode: off}"))
    assert decision.verdict == "allow"
    assert all(r.rule != "default-deny" for r in decision.results)


def test_first_override_naming_a_namespace_wins() -> None:
    config = """
overrides:
  - namespaces: [team]
    defaultDeny: warn
  - namespaces: [team, other]
    defaultDeny: off
"""
    assert decide(parse(workload_review("Pod")), UNFENCED, settings(config)).verdict == "warn"


@pytest.mark.parametrize(
    ("config", "kw"),
    [
        ("exemptions: {namespaces: [team]}", {}),
        ("exemptions: {users: [ci-bot]}", {"user": "ci-bot"}),
        ("exemptions: {groups: [platform]}", {"groups": ["system:authenticated", "platform"]}),
    ],
)
def test_exemptions_come_from_the_config(config: str, kw: dict[str, Any]) -> None:
    decision = decide(parse(workload_review("Pod", **kw)), UNFENCED, settings(config))
    assert decision.verdict == "allow"
    assert decision.exempt
    assert decision.annotations["decision"] == "allow"


def test_kube_system_is_exempt_by_default() -> None:
    assert decide(parse(workload_review("Pod", namespace="kube-system")), UNFENCED, DEFAULTS).exempt


def test_annotations_join_the_logs() -> None:
    doc = workload_review("Pod", uid="6f1e-uid")
    decision = decide(parse(doc), UNFENCED, DEFAULTS)
    assert decision.annotations == {
        "decision": "deny",
        "rules": "default-deny",
        "decision-id": "6f1e-uid",
        "policy-revision": DEFAULTS.revision,
    }


def test_policy_revision_follows_the_config() -> None:
    assert settings("defaultDeny: {mode: warn}").revision != DEFAULTS.revision
    assert settings("").revision == DEFAULTS.revision


def test_dry_run_is_decided_like_any_other_request() -> None:
    assert decide(parse(workload_review("Pod", dry_run=True)), UNFENCED, DEFAULTS).verdict == "deny"


class _StaleView(StaticView):
    def staleness(self) -> float:
        return 120.0


def test_stale_cache_denies_by_default_and_allows_when_configured() -> None:
    stale = _StaleView(list(FENCED._namespaces.values()))
    decision = decide(parse(workload_review("Pod")), stale, DEFAULTS)
    assert decision.verdict == "deny"
    assert "stale" in decision.message
    assert (
        decide(parse(workload_review("Pod")), stale, settings("cache: {onStale: allow}")).verdict
        == "allow"
    )
