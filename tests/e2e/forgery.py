"""Forging AdmissionReviews for the e2e tests: a client that is not the API server, posting to
kubefence's port, and what kubefence logged for it.

Plain module, no pytest. Also: kubefence serving with `--client-ca` (readiness on its probe
port), and a second webhook that vetoes what it is sent (a request kubefence approved that the
API server then refuses: the object stays while kubefence remembers the change).
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from kubefence_process import RunningWebhook
from kubernetes import client

from webhook import certs

FORGER_USER = "system:serviceaccount:tenant:forger"  # what the forged reviews claim
NETPOL_KIND = {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"}
NETPOL_RESOURCE = {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"}
VETOED = "vetoed by the e2e veto webhook"
Certificate = tuple[Path, Path] | None  # a client certificate and its key, or none


class AuthenticatedWebhook(RunningWebhook):
    """`serve --client-ca`: its TLS port refuses clients without a certificate, readiness too, so
    readiness is read on the plain-HTTP `--probe-port` (as the chart's kubelet probes do)."""

    @property
    def probe_url(self) -> str:
        args = [str(a) for a in self.process.args]
        return f"http://127.0.0.1:{args[args.index('--probe-port') + 1]}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        url = f"{self.probe_url}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kubefence exited {self.returncode}: {self.stderr_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"kubefence not ready within {timeout}s: {self.stderr_tail()}")


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


class _Veto(BaseHTTPRequestHandler):
    """A second validating webhook that refuses whatever it is sent."""

    def do_POST(self) -> None:
        review = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = {
            "uid": review["request"]["uid"],
            "allowed": False,
            "status": {"code": 403, "message": VETOED},
        }
        body = orjson.dumps({**review, "response": answer})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class VetoWebhook:
    """A webhook registered beside kubefence, refusing NetworkPolicy DELETEs in the namespaces
    whose labels match `labels`; `with VetoWebhook(api, work, labels): ...`."""

    NAME = "kubefence-e2e-veto"

    def __init__(self, api: client.ApiClient, work: Path, labels: dict[str, str]) -> None:
        ca_cert, ca_key = certs.generate_ca()
        cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
        self._paths = certs.write_bundle(work, ca_cert, ca_key, cert, key)
        self._api = api
        self._labels = labels
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> VetoWebhook:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._paths.cert, self._paths.key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Veto)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        client.AdmissionregistrationV1Api(self._api).create_validating_webhook_configuration(
            {
                "metadata": {"name": self.NAME},
                "webhooks": [
                    {
                        "name": "veto.e2e.kubefence.io",
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{server.server_address[1]}/",
                            "caBundle": base64.b64encode(self._paths.ca_cert.read_bytes()).decode(),
                        },
                        "rules": [
                            {
                                "apiGroups": ["networking.k8s.io"],
                                "apiVersions": ["v1"],
                                "operations": ["DELETE"],
                                "resources": ["networkpolicies"],
                            }
                        ],
                        "namespaceSelector": {"matchLabels": self._labels},
                        "sideEffects": "None",
                        "admissionReviewVersions": ["v1"],
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 10,
                    }
                ],
            }
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client.AdmissionregistrationV1Api(self._api).delete_validating_webhook_configuration(
            self.NAME
        )
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
