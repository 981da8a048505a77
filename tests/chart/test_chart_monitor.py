"""The chart's `kubefence monitor` (issue 18): the Deployment, its fixed-address Service, the
certificate with an IP SAN in each certificate mode, the client CA, the NOTES that wire the API
server to it, and the PrometheusRule, rendered by the pinned helm."""

from __future__ import annotations

import base64
import ipaddress
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from helmchart import (
    CHART,
    NAMESPACE,
    RELEASE,
    HelmError,
    helm,
    kinds,
    render,
    values_file,
)

from webhook.cli import COMMANDS, build_parser
from webhook.config import parse_settings

MONITOR = f"{RELEASE}-kubefence-monitor"
ADDRESS = "10.96.0.50"
ENABLED: dict[str, Any] = {
    "monitor": {
        "enabled": True,
        "service": {"clusterIP": ADDRESS},
        "clientCA": {"configMap": "apiserver-audit-ca"},
    }
}


pytestmark = pytest.mark.usefixtures("helm_required")


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def with_values(**extra: Any) -> dict[str, Any]:
    values = {key: dict(value) for key, value in ENABLED.items()}
    for key, value in extra.items():
        values[key] = {**values.get(key, {}), **value}
    return values


def notes(values: dict[str, Any], tmp_path: Path) -> str:
    """NOTES.txt as helm renders it after an install (helm template never prints it)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "notes.txt") . | indent 4 }}\n'
    )
    text = helm(
        "template", RELEASE, str(chart), "--namespace", NAMESPACE,
        "--values", str(values_file(values, tmp_path)), "--show-only", "templates/zz-notes.yaml",
    )  # fmt: skip
    return str(yaml.safe_load(text)["data"]["notes"])


def test_off_by_default() -> None:
    docs = render()
    assert not [d for d in docs if d["metadata"]["name"].startswith(MONITOR)]
    assert "PrometheusRule" not in kinds(docs)


def test_the_deployment_runs_monitor_with_the_flags_it_accepts() -> None:
    docs = render(ENABLED)
    pod = named(docs, "Deployment", MONITOR)["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    assert box["command"] == ["kubefence", "monitor"]
    assert box["args"] == [
        "--cert=/etc/kubefence/tls/tls.crt",
        "--key=/etc/kubefence/tls/tls.key",
        "--client-ca=/etc/kubefence/client-ca/ca.crt",
        "--port=8444",
        "--probe-port=8082",
        "--config=/etc/kubefence/config/config.yaml",
        f"--leader-election-namespace={NAMESPACE}",
        f"--leader-election-id={MONITOR}",
        "--audit-gap-window=60",
        "--decisions-port=8445",
        "--decisions-token-file=/etc/kubefence/decisions-token/token",
    ]
    mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/kubefence/client-ca"]]["configMap"]["name"] == "apiserver-audit-ca"
    assert volumes[mounts["/etc/kubefence/tls"]]["secret"]["secretName"] == f"{MONITOR}-tls"
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    # Every flag is one `kubefence monitor` parses, where this tree has the command (it is written
    # on another branch; the flags are issue 18's).
    if "monitor" not in COMMANDS:
        return
    argv = ["monitor", *box["args"]]
    parsed = build_parser(argv).parse_args(argv)
    assert str(parsed.client_ca) == "/etc/kubefence/client-ca/ca.crt"


@pytest.mark.parametrize("subject", ["kube-apiserver", "CN=kube-apiserver,O=system:masters"])
def test_the_pinned_sender_reaches_the_monitor_arguments(subject: str) -> None:
    docs = render(with_values(monitor={"clientCA": {"configMap": "ca", "subject": subject}}))
    args = _pod(docs)["containers"][0]["args"]
    assert f"--client-subject={subject}" in args
    assert _parsed(args).client_subject == [subject]
    assert not [a for a in _pod(render(ENABLED))["containers"][0]["args"] if "subject" in a]


def test_the_service_has_the_fixed_cluster_ip_the_api_server_dials() -> None:
    service = named(render(ENABLED), "Service", MONITOR)
    assert service["spec"]["clusterIP"] == ADDRESS
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "audit": 8444,
        "probes": 8082,
        "decisions": 8445,
    }
    deployment = named(render(ENABLED), "Deployment", MONITOR)
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    )


def test_generated_certificate_names_the_address() -> None:
    secret = named(render(ENABLED), "Secret", f"{MONITOR}-tls")
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(ADDRESS) in names.get_values_for_type(x509.IPAddress)
    assert f"{MONITOR}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    assert cert.issuer == ca.subject
    assert secret["metadata"]["annotations"]["kubefence.io/monitor-address"] == ADDRESS


def test_cert_manager_certificate_has_the_ip_san() -> None:
    docs = render(with_values(certs={"mode": "certManager"}))
    certificate = named(docs, "Certificate", f"{MONITOR}-tls")
    assert certificate["spec"]["ipAddresses"] == [ADDRESS]
    assert certificate["spec"]["issuerRef"]["name"] == f"{RELEASE}-kubefence-ca"
    assert not [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == f"{MONITOR}-tls"
    ]


def test_secret_mode_uses_the_given_secret() -> None:
    values = with_values(
        certs={"mode": "secret", "secret": {"name": "my-tls", "caBundle": "Zm9v"}},
        monitor={"certs": {"secretName": "monitor-tls"}},
    )
    pod = named(render(values), "Deployment", MONITOR)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"] == "monitor-tls"


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        (
            {"enabled": True, "clientCA": {"configMap": "ca"}},
            "/monitor/service/clusterIP': minLength",
        ),
        (
            {"enabled": True, "service": {"clusterIP": ADDRESS}},
            "/monitor/clientCA/configMap': minLength",
        ),
    ],
)
def test_the_schema_wants_an_address_and_a_client_ca(monitor: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as err:
        render({"monitor": monitor})
    assert message in str(err.value)


def test_the_own_network_policy_admits_the_audit_feed() -> None:
    policy = named(render(ENABLED), "NetworkPolicy", f"{RELEASE}-kubefence")
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert {8444, 8082} <= ports


def test_notes_print_the_api_server_flags_and_the_kubeconfig(tmp_path: Path) -> None:
    text = notes(ENABLED, tmp_path)
    assert "--audit-webhook-config-file=" in text
    assert "--audit-webhook-batch-max-wait=" in text
    assert f"server: https://{ADDRESS}:8444/audit" in text
    assert "client-certificate:" in text
    assert f"get secret {MONITOR}-tls" in text
    assert "--audit-webhook-config-file" not in notes({}, tmp_path / "off")


def test_prometheus_rule_alerts_on_alerts_and_on_a_silent_feed() -> None:
    docs = render(
        with_values(monitoring={"prometheusRule": {"enabled": True, "silentFeedAfter": "15m"}})
    )
    rule = named(docs, "PrometheusRule", f"{RELEASE}-kubefence")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "kubefence_monitor_alerts_total" in alerts["KubefenceEvasion"]["expr"]
    silent = alerts["KubefenceAuditFeedSilent"]["expr"]
    assert "kubefence_monitor_last_event_timestamp_seconds" in silent
    assert silent.endswith("> 900")
    assert "{{ $labels.kind }}" in alerts["KubefenceEvasion"]["annotations"]["summary"]
    assert "PrometheusRule" not in kinds(render(ENABLED))


def test_prometheus_rule_alerts_on_refused_batches() -> None:
    docs = render(with_values(monitoring={"prometheusRule": {"enabled": True}}))
    rule = named(docs, "PrometheusRule", f"{RELEASE}-kubefence")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    expr = alerts["KubefenceAuditBatchRejected"]["expr"]
    assert 'kubefence_monitor_batches_total{code=~"4.."}' in expr
    assert "increase(" in expr
    assert "{{ $labels.code }}" in alerts["KubefenceAuditBatchRejected"]["annotations"]["summary"]


def test_prometheus_rule_alerts_on_a_stale_canary_only_with_one() -> None:
    def alerts(values: dict[str, Any]) -> dict[str, Any]:
        rule = named(render(with_values(**values)), "PrometheusRule", f"{RELEASE}-kubefence")
        return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}

    rule_on = {"monitoring": {"prometheusRule": {"enabled": True}}}
    assert "KubefenceCanaryStale" not in alerts(rule_on)
    stale = alerts({**rule_on, "monitor": {"canary": 20}})["KubefenceCanaryStale"]
    assert "kubefence_monitor_canary_last_seen_timestamp_seconds" in stale["expr"]
    assert stale["expr"].endswith("> 160")


def test_the_config_the_monitor_reads_parses(tmp_path: Path) -> None:
    config = named(render(ENABLED), "ConfigMap", f"{RELEASE}-kubefence-config")
    parse_settings(config["data"]["config.yaml"], "config.yaml", tmp_path, lambda _: "")


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(named(docs, "Deployment", MONITOR)["spec"]["template"]["spec"])


def _parsed(args: list[str]) -> Any:
    argv = ["monitor", *args]
    return build_parser(argv).parse_args(argv)


def test_replicas_elect_one_active_monitor_on_a_lease_of_their_own() -> None:
    docs = render(with_values(monitor={"replicaCount": 2}))
    deployment = named(docs, "Deployment", MONITOR)
    assert deployment["spec"]["replicas"] == 2
    # Only the holder is Ready: a rolling update would wait forever on a new follower.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = _pod(docs)
    assert pod["serviceAccountName"] == MONITOR
    assert pod["automountServiceAccountToken"] is True  # the Lease needs the token
    (box,) = pod["containers"]
    parsed = _parsed(box["args"])
    assert (parsed.leader_election_namespace, parsed.leader_election_id) == (NAMESPACE, MONITOR)
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in box[
        "env"
    ]
    role = named(docs, "Role", MONITOR)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [MONITOR],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = named(docs, "RoleBinding", MONITOR)
    assert binding["roleRef"]["name"] == MONITOR
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": MONITOR, "namespace": NAMESPACE}
    ]
    account = named(docs, "ServiceAccount", MONITOR)
    assert account["automountServiceAccountToken"] is False  # the Pod opts in, nothing else
    # The webhook's own Role stays the notifier Lease's alone.
    webhook_role = named(docs, "Role", f"{RELEASE}-kubefence-leader-election")
    assert MONITOR not in str(webhook_role["rules"])


def test_a_lease_name_of_ones_own(tmp_path: Path) -> None:
    docs = render(with_values(monitor={"leaderElection": {"enabled": True, "leaseName": "mon"}}))
    assert _parsed(_pod(docs)["containers"][0]["args"]).leader_election_id == "mon"
    assert named(docs, "Role", MONITOR)["rules"][0]["resourceNames"] == ["mon"]


def test_more_than_one_replica_needs_leader_election() -> None:
    with pytest.raises(HelmError) as err:
        render(with_values(monitor={"replicaCount": 2, "leaderElection": {"enabled": False}}))
    assert "monitor.replicaCount > 1 needs monitor.leaderElection.enabled" in str(err.value)


def test_without_election_or_canary_the_monitor_has_no_token_and_no_role() -> None:
    docs = render(with_values(monitor={"leaderElection": {"enabled": False}}))
    pod = _pod(docs)
    assert pod["automountServiceAccountToken"] is False
    assert "--leader-election-namespace=" in pod["containers"][0]["args"]  # no election
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding") and MONITOR in str(d)]
    assert not [a for a in pod["containers"][0]["args"] if a.startswith("--canary")]


def test_the_canary_gets_a_configmap_of_the_chart_and_may_get_only_that() -> None:
    canary = f"{MONITOR}-canary"
    docs = render(with_values(monitor={"canary": 30, "leaderElection": {"enabled": False}}))
    pod = _pod(docs)
    assert pod["automountServiceAccountToken"] is True
    parsed = _parsed(pod["containers"][0]["args"])
    assert parsed.canary == 30.0
    assert parsed.canary_configmap == f"{NAMESPACE}/{canary}"
    assert named(docs, "ConfigMap", canary)["metadata"]["namespace"] == NAMESPACE
    assert named(docs, "Role", MONITOR)["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [canary],
            "verbs": ["get"],
        }
    ]
    off = render(ENABLED)
    assert not [d for d in off if d["metadata"]["name"] == canary]
    assert "configmaps" not in str(named(off, "Role", MONITOR)["rules"])


@pytest.mark.parametrize("canary", [-1, "often"])
def test_the_schema_wants_a_canary_interval_in_seconds(canary: Any) -> None:
    with pytest.raises(HelmError) as err:
        render(with_values(monitor={"canary": canary}))
    assert "/monitor/canary'" in str(err.value)


def test_notes_say_the_audit_policy_must_record_the_canary(tmp_path: Path) -> None:
    account = f"system:serviceaccount:{NAMESPACE}:{MONITOR}"
    text = notes(with_values(monitor={"canary": 30, "replicaCount": 2}), tmp_path)
    assert f"GETs ConfigMap {NAMESPACE}/{MONITOR}-canary as {account}" in text
    assert "must record that GET" in text
    assert "kubefence audit-level --policy /etc/kubernetes/audit-policy.yaml \\\n" in text
    assert f"--user {account} --group system:serviceaccounts" in text
    assert f"--resource configmaps --namespace {NAMESPACE} --name {MONITOR}-canary" in text
    assert "1/2 ready" in text
    assert "must record that GET" not in notes(ENABLED, tmp_path / "off")


# --- audit gaps (issue 23 item 6): serve's sensitive decisions to the monitor ---------------------


def _serve_box(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = named(docs, "Deployment", f"{RELEASE}-kubefence")["spec"]["template"]["spec"]
    return dict(pod["containers"][0]) | {"volumes": pod["volumes"]}


def test_serve_sends_its_decisions_to_the_monitor_service_with_the_token_and_its_ca() -> None:
    docs = render(with_values(clientCA={"configMap": "apiserver-ca", "subject": "kube-apiserver"}))
    serve = _serve_box(docs)
    url = f"https://{MONITOR}.{NAMESPACE}.svc:8445/decisions"
    assert f"--decisions-to={url}" in serve["args"]
    argv = ["serve", *serve["args"]]
    parsed = build_parser(argv).parse_args(argv)
    assert parsed.decisions_to == [url]
    assert str(parsed.decisions_ca) == "/etc/kubefence/monitor-ca/ca.crt"
    assert str(parsed.decisions_token_file) == "/etc/kubefence/decisions-token/token"
    volumes = {v["name"]: v for v in serve["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in serve["volumeMounts"]}
    ca = volumes[mounts["/etc/kubefence/monitor-ca"]]["secret"]
    # the monitor's CA only: serve never gets the monitor's private key
    assert ca == {"secretName": f"{MONITOR}-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    token_secret = volumes[mounts["/etc/kubefence/decisions-token"]]["secret"]["secretName"]
    # the monitor takes them on its decisions port, wanting the same token
    monitor = _pod(docs)
    args = _parsed(monitor["containers"][0]["args"])
    assert (args.audit_gap_window, args.decisions_port) == (60.0, 8445)
    assert args.webhook_client_subject == ["kube-apiserver"]
    monitor_volumes = {v["name"]: v for v in monitor["volumes"]}
    assert monitor_volumes["decisions-token"]["secret"]["secretName"] == token_secret
    secret = named(docs, "Secret", token_secret)
    assert len(base64.b64decode(secret["data"]["token"])) == 48
    service = named(docs, "Service", MONITOR)
    assert {"name": "decisions", "port": 8445, "targetPort": "decisions", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )


def test_without_a_gap_window_nothing_is_sent_nor_taken() -> None:
    docs = render(with_values(monitor={"auditGap": {"window": 0}}))
    assert not [a for a in _serve_box(docs)["args"] if a.startswith("--decisions")]
    assert not [a for a in _pod(docs)["containers"][0]["args"] if "decisions" in a or "gap" in a]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-decisions")]
    assert not [a for a in _serve_box(render())["args"] if a.startswith("--decisions")]


def test_the_own_network_policy_lets_serve_reach_the_decisions_port() -> None:
    policy = named(render(ENABLED), "NetworkPolicy", f"{RELEASE}-kubefence")
    ingress = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert 8445 in ingress
    (egress,) = [
        r for r in policy["spec"]["egress"] if {"port": 8445, "protocol": "TCP"} in r["ports"]
    ]
    assert egress["to"] == [
        {"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "kubefence-monitor", "app.kubernetes.io/instance": RELEASE,
        }}}
    ]  # fmt: skip


def test_prometheus_rule_alerts_when_serve_cannot_send_its_decisions() -> None:
    docs = render(with_values(monitoring={"prometheusRule": {"enabled": True}}))
    rule = named(docs, "PrometheusRule", f"{RELEASE}-kubefence")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    expr = alerts["KubefenceDecisionFeedFailing"]["expr"]
    assert 'kubefence_decision_feed_records_total{result=~"failed|refused|queue_full"}' in expr
    off = render(
        with_values(
            monitoring={"prometheusRule": {"enabled": True}}, monitor={"auditGap": {"window": 0}}
        )
    )
    rule = named(off, "PrometheusRule", f"{RELEASE}-kubefence")
    assert "KubefenceDecisionFeedFailing" not in {
        r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]
    }
