"""Forged AdmissionReviews, sent beside a real kube-apiserver: what another client's review can change.

Anyone who reaches kubefence's port can POST a review. An allowed NetworkPolicy change is
remembered for a while (webhook/cluster/approvals.py, `GRACE_SECONDS`), so each forged review here
is sent right before the real request it tries to sway. Two modes (issue 17 §1, docs/design.md,
"Trust model"):

- A, client authentication: the API server shows a certificate of commonName
  `kube-apiserver-admission`, signed by the cluster CA, through its AdmissionConfiguration;
  `serve --client-ca <cluster CA> --client-subject kube-apiserver-admission`. A client without a
  certificate is refused in the TLS handshake. One with another certificate of the same CA (a
  kubelet's) is decided, answered and logged under its `client`, and changes no later decision.
- B, none: anyone's approvals are remembered, and each rule reads them only in the direction that
  denies more. A forged review can cause a denial, never an allow.

One control plane serves the whole module (its API server always has the client certificate; the
mode-B process asks for none, so none is shown). The two kubefence processes take turns being the
registered webhook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from controlplane import ControlPlane, bin_dir, free_port, missing_binaries
from forgery import (
    FORGER_USER,
    VETOED,
    AuthenticatedWebhook,
    Certificate,
    VetoWebhook,
    forged_review,
    held,
    logged,
    logged_real,
    plain_post,
    refusal,
    send,
)
from kubefence_process import AUDIT_POLICY, RunningWebhook, denial, marker_pod
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prerequisites import unavailable
from test_webhook import deny_all, new_namespace

from webhook.cluster.approvals import GRACE_SECONDS

API_SERVER_CN = "kube-apiserver-admission"


# --- the cluster and the two processes -----------------------------------------------------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = missing_binaries()
    if missing:
        unavailable(f"no local control plane in {bin_dir()}: run hack/build-control-plane.sh")
    cp = ControlPlane(
        work_dir=tmp_path_factory.mktemp("forged-plane"), webhook_client_cn=API_SERVER_CN
    )
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def api(plane: ControlPlane) -> Iterator[client.ApiClient]:
    kube = config.new_client_from_config(config_file=str(plane.kubeconfig_path))
    try:
        yield kube
    finally:
        kube.close()


@pytest.fixture(scope="module")
def authenticated(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWebhook]:
    hook = AuthenticatedWebhook.start(
        tmp_path_factory.mktemp("kubefence-mode-a"),
        plane.kubeconfig_path,
        AUDIT_POLICY,
        extra_args=(
            "--client-ca", str(plane.ca_path),
            "--client-subject", API_SERVER_CN,
            "--probe-port", str(free_port()),
        ),
    )  # fmt: skip
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture(scope="module")
def unauthenticated(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWebhook]:
    hook = RunningWebhook.start(
        tmp_path_factory.mktemp("kubefence-mode-b"), plane.kubeconfig_path, AUDIT_POLICY
    )
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture(scope="module")
def registered(api: client.ApiClient) -> Iterator[dict[str, RunningWebhook]]:
    """Which process the API server calls now (`current`); unregistered at the end."""
    state: dict[str, RunningWebhook] = {}
    try:
        yield state
    finally:
        if state:
            state["current"].unregister(api)


def _use(hook: RunningWebhook, api: client.ApiClient, state: dict[str, RunningWebhook]) -> None:
    if state.get("current") is not hook:
        hook.register(api)  # waits until the API server calls it
        state["current"] = hook


@pytest.fixture
def mode_a(
    authenticated: RunningWebhook, api: client.ApiClient, registered: dict[str, RunningWebhook]
) -> RunningWebhook:
    _use(authenticated, api, registered)
    return authenticated


@pytest.fixture
def mode_b(
    unauthenticated: RunningWebhook, api: client.ApiClient, registered: dict[str, RunningWebhook]
) -> RunningWebhook:
    _use(unauthenticated, api, registered)
    return unauthenticated


@pytest.fixture(scope="module")
def kubelet_cert(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A certificate the cluster CA signed for someone else: a kubelet's."""
    return plane.issue_client_certificate(
        "system:node:worker-1", tmp_path_factory.mktemp("forger"), organizations=("system:nodes",)
    )


@pytest.fixture(scope="module")
def veto(
    api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A second webhook refusing NetworkPolicy DELETEs in namespaces with these labels."""
    labels = {"kubefence-e2e/veto": "true"}
    with VetoWebhook(api, tmp_path_factory.mktemp("veto"), labels):
        yield labels


# --- the namespaces attacked ----------------------------------------------------------------------


def unfenced(api: client.ApiClient) -> str:
    """A namespace whose only policy fences the pods labelled app=web, not every pod."""
    namespace = new_namespace(api, "forged-open")
    body = deny_all(namespace, "web-ingress")
    body["spec"] = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}
    client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, body)
    return namespace


def fenced(api: client.ApiClient, labels: dict[str, str] | None = None) -> str:
    """A namespace fenced by `default-deny` alone, with no running Pods (so its removal would be
    a teardown, which the guard allows), once kubefence lets workloads in there."""
    namespace = new_namespace(api, "forged-fenced", labels)
    client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, deny_all(namespace))
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 10
    while True:
        try:
            core.create_namespaced_pod(namespace, marker_pod("probe"), dry_run="All")
            return namespace
        except ApiException as exc:
            if "is not fenced" not in denial(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def plant(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """An UPDATE that turns `web-ingress` into a deny-all of every pod: a fence planted."""
    old = held(api, namespace, "web-ingress")
    new = {**old, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    return forged_review("UPDATE", namespace, "web-ingress", new=new, old=old)


def removal(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """A DELETE of the namespace's `default-deny`, naming the exact version the cluster holds."""
    return forged_review(
        "DELETE", namespace, "default-deny", old=held(api, namespace, "default-deny")
    )


def create_pod(api: client.ApiClient, namespace: str, name: str, *, dry_run: bool = False) -> str:
    """A real Pod create through the API server: "created", or the denial's message."""
    kwargs = {"dry_run": "All"} if dry_run else {}
    try:
        client.CoreV1Api(api).create_namespaced_pod(namespace, marker_pod(name), **kwargs)
    except ApiException as exc:
        if exc.status != 403:
            raise
        return denial(exc)
    return "created"


def neutraliser(namespace: str) -> dict[str, Any]:
    """A policy letting every peer in and out of every pod: it neutralises any default-deny."""
    body = deny_all(namespace, "allow-everything")
    body["spec"] = {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{}],
        "egress": [{}],
    }
    return body


# --- mode A: the API server's certificate, pinned -------------------------------------------------


def test_the_api_server_shows_its_pinned_certificate(
    api: client.ApiClient, mode_a: RunningWebhook
) -> None:
    namespace = fenced(api)
    assert create_pod(api, namespace, "app") == "created"
    line = logged_real(mode_a, namespace, "app", "CREATE")
    assert line["client"] == f"commonName={API_SERVER_CN}"
    assert line["peer"] == "127.0.0.1"


def test_the_api_servers_own_approvals_are_remembered(
    api: client.ApiClient, mode_a: RunningWebhook, veto: dict[str, str]
) -> None:
    # The pin lets the API server in: a removal kubefence approved for it counts at once, here
    # one that another webhook vetoed, so the policy stays and only the memory can deny.
    namespace = fenced(api, veto)
    net = client.NetworkingV1Api(api)
    with pytest.raises(ApiException) as caught:
        net.delete_namespaced_network_policy("default-deny", namespace)
    assert VETOED in denial(caught.value)
    assert logged_real(mode_a, namespace, "default-deny", "DELETE")["allowed"] is True
    assert "is not fenced" in create_pod(api, namespace, "app")
    assert [p.metadata.name for p in net.list_namespaced_network_policy(namespace).items] == [
        "default-deny"
    ]


def test_a_client_without_a_certificate_is_refused_in_the_handshake(
    api: client.ApiClient, mode_a: RunningWebhook
) -> None:
    namespace = fenced(api)
    review = removal(api, namespace)
    assert refusal(mode_a, review) != "answered"
    # Nor does the plain-HTTP probe port take reviews.
    assert isinstance(mode_a, AuthenticatedWebhook)
    assert plain_post(f"{mode_a.probe_url}/validate", orjson.dumps(review)) in (404, 405)
    assert create_pod(api, namespace, "app") == "created"
    uid = review["request"]["uid"]
    assert not [d for d in mode_a.decisions() if d["decision_id"] == uid]


def test_a_fence_planted_by_another_certificate_lets_nothing_in(
    api: client.ApiClient, mode_a: RunningWebhook, kubelet_cert: Certificate
) -> None:
    namespace = unfenced(api)
    review = plant(api, namespace)
    assert send(mode_a, review, kubelet_cert)["allowed"] is True  # a fence is welcome...
    assert "is not fenced" in create_pod(api, namespace, "app")  # ...but it was never written
    line = logged(mode_a, review["request"]["uid"])
    assert line["client"] == "organizationName=system:nodes,commonName=system:node:worker-1"
    assert line["peer"] == "127.0.0.1"
    assert line["user"] == FORGER_USER


def test_a_removal_forged_with_another_certificate_denies_nothing(
    api: client.ApiClient, mode_a: RunningWebhook, kubelet_cert: Certificate
) -> None:
    namespace = fenced(api)
    review = removal(api, namespace)
    # Answered as the API server's would be (a teardown: no running Pods)...
    assert send(mode_a, review, kubelet_cert)["allowed"] is True
    # ...and not remembered: the fence still counts for the workload created right after.
    assert create_pod(api, namespace, "app") == "created"
    line = logged(mode_a, review["request"]["uid"])
    assert line["client"] == "organizationName=system:nodes,commonName=system:node:worker-1"
    assert line["allowed"] is True


def test_a_neutraliser_after_a_removal_forged_with_another_certificate_is_denied(
    api: client.ApiClient, mode_a: RunningWebhook, kubelet_cert: Certificate
) -> None:
    namespace = fenced(api)
    assert send(mode_a, removal(api, namespace), kubelet_cert)["allowed"] is True
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(api).create_namespaced_network_policy(
            namespace, neutraliser(namespace)
        )
    assert "would neutralise the default-deny" in denial(caught.value)


# --- mode B: no client authentication -------------------------------------------------------------


def test_without_a_client_ca_everyone_is_unauthenticated(
    api: client.ApiClient, mode_b: RunningWebhook, kubelet_cert: Certificate
) -> None:
    namespace = fenced(api)
    assert create_pod(api, namespace, "app") == "created"
    assert logged_real(mode_b, namespace, "app", "CREATE")["client"] == "unauthenticated"
    # A certificate nobody asked for is not looked at.
    review = forged_review("CREATE", namespace, "extra", new=deny_all(namespace, "extra"))
    assert send(mode_b, review, kubelet_cert)["allowed"] is True
    line = logged(mode_b, review["request"]["uid"])
    assert (line["client"], line["peer"]) == ("unauthenticated", "127.0.0.1")


def test_a_forged_fence_never_lets_a_workload_in(
    api: client.ApiClient, mode_b: RunningWebhook
) -> None:
    namespace = unfenced(api)
    review = plant(api, namespace)
    assert send(mode_b, review, None)["allowed"] is True  # remembered: anyone's approvals are
    assert "is not fenced" in create_pod(api, namespace, "app")  # but a fence is never added
    assert logged(mode_b, review["request"]["uid"])["client"] == "unauthenticated"


def test_a_forged_removal_can_only_deny_and_only_for_a_while(
    api: client.ApiClient, mode_b: RunningWebhook
) -> None:
    namespace = fenced(api)
    review = removal(api, namespace)
    assert send(mode_b, review, None)["allowed"] is True
    sent = time.monotonic()
    # Removals count in the deny direction: the fence approved to go no longer fences...
    assert "is not fenced" in create_pod(api, namespace, "app")
    # ...until the grace is over and a live read shows it still there (the DELETE never
    # happened). Dry runs, so that the poll leaves nothing behind.
    deadline = sent + GRACE_SECONDS + 30
    while (answer := create_pod(api, namespace, "app", dry_run=True)) != "created":
        assert "is not fenced" in answer
        assert time.monotonic() < deadline, "the forged removal was never forgotten"
        time.sleep(0.5)
    assert create_pod(api, namespace, "app") == "created"


def test_a_neutraliser_after_a_forged_removal_is_denied(
    api: client.ApiClient, mode_b: RunningWebhook
) -> None:
    namespace = fenced(api)
    assert send(mode_b, removal(api, namespace), None)["allowed"] is True
    # allow-all reads remembered additions, never removals: the default-deny still counts as
    # the fence this policy would neutralise.
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(api).create_namespaced_network_policy(
            namespace, neutraliser(namespace)
        )
    assert "would neutralise the default-deny" in denial(caught.value)
    names = client.NetworkingV1Api(api).list_namespaced_network_policy(namespace).items
    assert [p.metadata.name for p in names] == ["default-deny"]


def test_a_forged_removal_of_an_opener_lets_nothing_in(
    api: client.ApiClient, mode_b: RunningWebhook
) -> None:
    # A fence neutralised by a policy from before it (kubefence lets an opener into a namespace
    # with nothing to neutralise yet): workloads are denied there, naming the opener.
    namespace = new_namespace(api, "forged-opened")
    net = client.NetworkingV1Api(api)
    net.create_namespaced_network_policy(namespace, neutraliser(namespace))
    net.create_namespaced_network_policy(namespace, deny_all(namespace))
    assert "allow-everything" in create_pod(api, namespace, "probe", dry_run=True)
    opener = held(api, namespace, "allow-everything")
    review = forged_review("DELETE", namespace, "allow-everything", old=opener)
    assert send(mode_b, review, None)["allowed"] is True
    # A remembered removal takes a fence away, never an opening: still neutralised.
    answer = create_pod(api, namespace, "app")
    assert "is not fenced" in answer
    assert "allow-everything" in answer
