"""Issue 16 through the real API server: openings pooled across policies, jointly on ports and
peers."""

from __future__ import annotations

from typing import Any

import pytest
from kubefence_process import RunningWebhook, denial
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_redteam import fenced_namespace
from test_webhook import deny_all


def opener(namespace: str, name: str, ingress: list[Any], selector: Any = None) -> dict[str, Any]:
    body = deny_all(namespace, name)
    body["spec"] = {"podSelector": selector or {}, "policyTypes": ["Ingress"], "ingress": ingress}
    return body


def test_a_port_split_across_two_policies_is_denied_at_the_second(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    net = client.NetworkingV1Api(kube)
    low = [{"ports": [{"protocol": "TCP", "port": 1, "endPort": 32767}]}]
    high = [{"ports": [{"protocol": "TCP", "port": 32768, "endPort": 65535}]}]
    net.create_namespaced_network_policy(namespace, opener(namespace, "tcp-low", low))
    with pytest.raises(ApiException) as caught:
        net.create_namespaced_network_policy(namespace, opener(namespace, "tcp-high", high))
    assert "would neutralise the default-deny" in denial(caught.value)


def test_halves_of_the_address_space_on_split_ports_are_denied(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    halves = [{"ipBlock": {"cidr": "0.0.0.0/1"}}, {"ipBlock": {"cidr": "128.0.0.0/1"}}]
    rules = [
        {"from": halves, "ports": [{"port": 1, "endPort": 1000}]},
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 1001, "endPort": 65535}]},
    ]
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(kube).create_namespaced_network_policy(
            namespace, opener(namespace, "joint", rules)
        )
    assert "would neutralise the default-deny" in denial(caught.value)


def test_a_selector_every_pod_satisfies_is_every_pod(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    nobody_has = {"matchExpressions": [{"key": "some-key-nobody-has", "operator": "DoesNotExist"}]}
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(kube).create_namespaced_network_policy(
            namespace, opener(namespace, "sneaky", [{}], selector=nobody_has)
        )
    assert "would neutralise the default-deny" in denial(caught.value)


def test_a_near_total_opening_is_let_through_with_a_warning(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    almost = [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["192.0.2.1/32"]}}]}]
    api = client.NetworkingV1Api(kube)
    _, _, headers = api.create_namespaced_network_policy_with_http_info(
        namespace, opener(namespace, "almost", almost)
    )
    assert "nearly every peer" in headers.get("Warning", "")


def test_excepting_only_addresses_that_are_never_peers_is_denied(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    # Loopback is never the peer of a Pod's traffic: this admits every peer there is.
    everyone = [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["127.0.0.0/8"]}}]}]
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(kube).create_namespaced_network_policy(
            namespace, opener(namespace, "loopback-out", everyone)
        )
    assert "would neutralise the default-deny" in denial(caught.value)
