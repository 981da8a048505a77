"""The chart's `monitor.alertmanager` (issue 28 item 3): the URLs, labels and credentials become
`kubefence monitor --alertmanager*` flags that it parses, secrets come from mounted Secrets (never
the args), the NetworkPolicy lets the alerts out, and the PrometheusRule alerts on dropped ones."""

from __future__ import annotations

from typing import Any

import pytest
from helmchart import RELEASE, HelmError, render
from test_chart_monitor import ENABLED, _parsed, _pod, named, with_values

URLS = ["http://alertmanager-operated.monitoring:9093", "https://am.example:8443/am"]


def alertmanager(**values: Any) -> dict[str, Any]:
    return with_values(monitor={**ENABLED["monitor"], "alertmanager": {"urls": URLS, **values}})


def test_without_urls_the_monitor_posts_nowhere() -> None:
    args = _pod(render(ENABLED))["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--alertmanager")]
    rule = named(
        render(with_values(monitoring={"prometheusRule": {"enabled": True}})),
        "PrometheusRule",
        f"{RELEASE}-kubefence",
    )
    assert "KubefenceAlertDeliveryFailing" not in str(rule)


def test_the_urls_and_labels_become_flags_the_monitor_parses() -> None:
    docs = render(alertmanager(labels={"cluster": "prod-eu"}, resend=30))
    (box,) = _pod(docs)["containers"]
    parsed = _parsed(box["args"])
    assert parsed.alertmanager == URLS
    assert parsed.alertmanager_label == ["cluster=prod-eu"]
    assert parsed.alertmanager_resend == 30.0
    assert parsed.alertmanager_alert_lifetime == 3600.0
    assert parsed.alertmanager_token_file is None
    assert parsed.alertmanager_ca is None


def test_credentials_come_from_mounted_secrets_never_the_args() -> None:
    docs = render(
        alertmanager(
            ca={"configMap": "am-ca", "key": "ca.pem"},
            clientCertSecret="am-client",
            bearerToken={"secretName": "am-token", "key": "t"},
        )
    )
    pod = _pod(docs)
    (box,) = pod["containers"]
    parsed = _parsed(box["args"])
    mounts = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert str(parsed.alertmanager_ca) == f"{mounts['alertmanager-ca']}/ca.pem"
    assert volumes["alertmanager-ca"]["configMap"]["name"] == "am-ca"
    assert str(parsed.alertmanager_cert) == f"{mounts['alertmanager-client']}/tls.crt"
    assert str(parsed.alertmanager_key) == f"{mounts['alertmanager-client']}/tls.key"
    assert volumes["alertmanager-client"]["secret"]["secretName"] == "am-client"
    assert str(parsed.alertmanager_token_file) == f"{mounts['alertmanager-token']}/t"
    assert volumes["alertmanager-token"]["secret"]["secretName"] == "am-token"


def test_basic_auth_is_a_username_and_a_password_secret() -> None:
    docs = render(alertmanager(basicAuth={"username": "monitor", "passwordSecret": "am-basic"}))
    pod = _pod(docs)
    (box,) = pod["containers"]
    parsed = _parsed(box["args"])
    assert parsed.alertmanager_username == "monitor"
    mount = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}["alertmanager-password"]
    assert str(parsed.alertmanager_password_file) == f"{mount}/password"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["alertmanager-password"]["secret"]["secretName"] == "am-basic"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"bearerToken": {"secretName": "t"}, "basicAuth": {"username": "u",
                                                              "passwordSecret": "p"}},
            "not both",
        ),
        ({"basicAuth": {"username": "u"}}, "go together"),
        ({"urls": ["alertmanager:9093"]}, "/monitor/alertmanager/urls/0"),
        ({"urls": ["http://user:pw@am:9093"]}, "/monitor/alertmanager/urls/0"),
        ({"labels": {"severity": "low"}}, "invalid propertyName 'severity'"),
        ({"resend": 0}, "/monitor/alertmanager/resend"),
    ],
)  # fmt: skip
def test_values_that_would_not_deliver_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as err:
        render(alertmanager(**values))
    assert message in str(err.value)


def test_the_network_policy_lets_the_alerts_out_by_port() -> None:
    policy = named(render(alertmanager()), "NetworkPolicy", f"{RELEASE}-kubefence")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {9093, 8443} <= ports
    plain = named(
        render(alertmanager(urls=["http://am.monitoring"])), "NetworkPolicy", f"{RELEASE}-kubefence"
    )
    assert 80 in {p["port"] for rule in plain["spec"]["egress"] for p in rule["ports"]}


def test_prometheus_rule_alerts_on_alerts_the_monitor_dropped() -> None:
    values = alertmanager()
    values["monitoring"] = {"prometheusRule": {"enabled": True}}
    rule = named(render(values), "PrometheusRule", f"{RELEASE}-kubefence")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    failing = alerts["KubefenceAlertDeliveryFailing"]
    assert "kubefence_monitor_alertmanager_dropped_alerts_total" in failing["expr"]
    assert "increase(" in failing["expr"]
    assert "{{ $labels.reason }}" in failing["annotations"]["summary"]
