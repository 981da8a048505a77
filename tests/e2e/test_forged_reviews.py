"""Forged AdmissionReviews, sent beside a real kube-apiserver: what another client's review can change.

Anyone who reaches kubefence's port can POST a review. An allowed NetworkPolicy change is
remembered for a while (webhook/cluster/approvals.py, `GRACE_SECONDS`), so each forged review here
is sent right before the real request it tries to sway. Two modes (issue 17 §1, DESIGN "Trust"):

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

import base64
import contextlib
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from controlplane import ControlPlane, bin_dir, free_port, missing_binaries
from kubefence_process import AUDIT_POLICY, RunningWebhook, denial, marker_pod
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from test_webhook import deny_all, new_namespace

from webhook import certs
from webhook.cluster.approvals import GRACE_SECONDS

API_SERVER_CN = "kube-apiserver-admission"
FORGER_USER = "system:serviceaccount:tenant:forger"  # what the forged reviews claim
VETO_LABEL = "kubefence-e2e/veto"  # namespaces where the veto webhook refuses NetworkPolicy DELETEs
NETPOL_KIND = {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"}
NETPOL_RESOURCE = {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"}
Certificate = tuple[Path, Path] | None  # a client certificate and its key, or none


class AuthenticatedWebhook(RunningWebhook):
    """`serve --client-ca`: its TLS port refuses clients without a certificate, readiness too, so
    readiness is read on the plain-HTTP `--probe-port` (as the chart's kubelet probes do)."""

    def wait_ready(self, timeout: float = 60.0) -> None:
        args = [str(a) for a in self.process.args]
        url = f"http://127.0.0.1:{args[args.index('--probe-port') + 1]}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kubefence exited {self.returncode}: {self.stderr_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"kubefence not ready within {timeout}s: {self.stderr_tail()}")


# --- the cluster and the two processes -----------------------------------------------------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = missing_binaries()
    if missing:
        message = f"no local control plane in {bin_dir()}: run hack/build-control-plane.sh"
        if os.environ.get("KUBEFENCE_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
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


class _Veto(BaseHTTPRequestHandler):
    """A second validating webhook that refuses whatever it is sent."""

    def do_POST(self) -> None:
        review = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = {
            "uid": review["request"]["uid"],
            "allowed": False,
            "status": {"code": 403, "message": "vetoed by the e2e veto webhook"},
        }
        body = orjson.dumps({**review, "response": answer})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def veto(
    api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A webhook registered beside kubefence that refuses NetworkPolicy DELETEs in namespaces
    labelled `VETO_LABEL`: kubefence has approved such a DELETE when the API server gives up on
    it, so the policy stays while kubefence remembers it going. The labels for such a namespace."""
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(tmp_path_factory.mktemp("veto"), ca_cert, ca_key, cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(paths.cert, paths.key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Veto)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registration = client.AdmissionregistrationV1Api(api)
    name = "kubefence-e2e-veto"
    registration.create_validating_webhook_configuration(
        {
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "veto.e2e.kubefence.io",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{server.server_address[1]}/",
                        "caBundle": base64.b64encode(paths.ca_cert.read_bytes()).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": ["networking.k8s.io"],
                            "apiVersions": ["v1"],
                            "operations": ["DELETE"],
                            "resources": ["networkpolicies"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {VETO_LABEL: "true"}},
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 10,
                }
            ],
        }
    )
    try:
        yield {VETO_LABEL: "true"}
    finally:
        registration.delete_validating_webhook_configuration(name)
        server.shutdown()
        server.server_close()


# --- forging ---------------------------------------------------------------------------------------


def forged_review(
    operation: str, namespace: str, name: str, *, new: Any = None, old: Any = None
) -> dict[str, Any]:
    """An AdmissionReview for a NetworkPolicy change, as the API server would send it."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": NETPOL_KIND,
            "resource": NETPOL_RESOURCE,
            "requestKind": NETPOL_KIND,
            "requestResource": NETPOL_RESOURCE,
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": FORGER_USER, "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": False,
        },
    }


def send(hook: RunningWebhook, review: dict[str, Any], cert: Certificate) -> dict[str, Any]:
    """POST the review to kubefence's port as another client; kubefence's response."""
    context = ssl.create_default_context(cadata=hook.ca_pem.decode())
    if cert is not None:
        context.load_cert_chain(*cert)
    request = urllib.request.Request(
        f"{hook.url}/validate",
        data=orjson.dumps(review),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        response: dict[str, Any] = orjson.loads(answer.read())["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def plain_post(url: str, body: bytes) -> int:
    """The status of one plain-HTTP POST."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def held(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """A NetworkPolicy exactly as the API server holds it (uid, resourceVersion): what a forger
    who may read policies would put in `oldObject`."""
    policy = client.NetworkingV1Api(api).read_namespaced_network_policy(name, namespace)
    body: dict[str, Any] = api.sanitize_for_serialization(policy)
    body.update(apiVersion="networking.k8s.io/v1", kind="NetworkPolicy")
    return body


def logged(hook: RunningWebhook, decision_id: str) -> dict[str, Any]:
    """The decision-log line of one review (polled: the line is written as it is answered)."""
    deadline = time.monotonic() + 10
    while True:
        found = [d for d in hook.decisions() if d["decision_id"] == decision_id]
        if found:
            (line,) = found
            return line
        assert time.monotonic() < deadline, f"no decision logged for {decision_id}"
        time.sleep(0.1)


def logged_real(hook: RunningWebhook, namespace: str, name: str, operation: str) -> dict[str, Any]:
    """The last decision on a real (API server's) request for the object."""
    deadline = time.monotonic() + 10
    while True:
        found = [
            d
            for d in hook.decisions()
            if (d["namespace"], d["name"], d["operation"]) == (namespace, name, operation)
            and d["user"] != FORGER_USER
        ]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no decision logged for {operation} {name}"
        time.sleep(0.1)


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


def refusal(hook: RunningWebhook, review: dict[str, Any]) -> str:
    """How kubefence's port turns away a client without a certificate ("answered" if not).

    The server refuses in the handshake; with TLS 1.3 the client may have sent its request by
    then, and sees either the alert (`certificate required`) or the connection closed.
    """
    try:
        send(hook, review, None)
    except (ssl.SSLError, ConnectionError, urllib.error.URLError) as exc:
        return str(exc)
    return "answered"


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
    assert "vetoed by the e2e veto webhook" in denial(caught.value)
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
    args = [str(a) for a in mode_a.process.args]
    probe = f"http://127.0.0.1:{args[args.index('--probe-port') + 1]}/validate"
    assert plain_post(probe, orjson.dumps(review)) in (404, 405)
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
