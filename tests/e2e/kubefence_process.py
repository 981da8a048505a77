"""kubefence as the e2e suite runs it: a `kubefence serve` process and its real webhook registration.

The process serves the cluster live (`--kubeconfig`), on loopback with a certificate for
127.0.0.1, and evaluates the same audit policy file the API server was given. Registration uses
the rules of `webhook.registration` (the chart's) and waits for the API server's informer with a
marker request, never a sleep.
"""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from controlplane import free_port
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook import certs
from webhook.registration import DEFAULT_RULES

HERE = Path(__file__).parent
AUDIT_POLICY = HERE / "audit-policy.yaml"
WEBHOOK_NAME = "validate.kubefence.io"
CONFIGURATION = "kubefence-e2e"
OWN_NAMESPACE = "kubefence-system"
MARKER_NAMESPACE = "kubefence-marker"


@dataclass
class RunningWebhook:
    work: Path
    port: int
    ca_pem: bytes
    process: subprocess.Popen[bytes]
    config_path: Path
    decision_log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @classmethod
    def start(
        cls,
        work: Path,
        kubeconfig: Path,
        audit_policy: Path,
        config_extra: str = "",
        extra_args: tuple[str, ...] = (),
    ) -> RunningWebhook:
        ca_cert, ca_key = certs.generate_ca()
        cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
        paths = certs.write_bundle(work / "certs", ca_cert, ca_key, cert, key)
        config = work / "config.yaml"
        config.write_text(
            f"webhookName: {WEBHOOK_NAME}\nauditScope:\n  policyFile: {audit_policy.resolve()}\n{config_extra}"
        )
        port = free_port()
        log = work / "decisions.log"
        args = [
            sys.executable, "-m", "webhook", "serve",
            "--kubeconfig", str(kubeconfig),
            "--cert", str(paths.cert), "--key", str(paths.key),
            "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port),
            "--drain-seconds", "0",
            *extra_args,
        ]  # fmt: skip
        with log.open("wb") as out, (work / "stderr.log").open("wb") as err:
            process = subprocess.Popen(args, stdout=out, stderr=err)
        hook = cls(work, port, paths.ca_cert.read_bytes(), process, config, log)
        hook.wait_ready()
        return hook

    def wait_ready(self, timeout: float = 60.0) -> None:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"kubefence exited {self.process.returncode}: {self.stderr_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"kubefence not ready within {timeout}s: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        text = (self.work / "stderr.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-30:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- registration --------------------------------------------------------------------------

    def manifest(self, failure_policy: str = "Fail") -> dict[str, Any]:
        return webhook_configuration(
            CONFIGURATION,
            WEBHOOK_NAME,
            f"{self.url}/validate",
            self.ca_pem,
            failure_policy=failure_policy,
        )

    def register(self, kube: client.ApiClient, failure_policy: str = "Fail") -> None:
        api = client.AdmissionregistrationV1Api(kube)
        try:
            api.delete_validating_webhook_configuration(CONFIGURATION)
        except ApiException as exc:
            if exc.status != 404:
                raise
        api.create_validating_webhook_configuration(self.manifest(failure_policy))
        wait_for_webhook(kube)

    def unregister(self, kube: client.ApiClient) -> None:
        try:
            client.AdmissionregistrationV1Api(kube).delete_validating_webhook_configuration(
                CONFIGURATION
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- logs ------------------------------------------------------------------------------------

    def decisions(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.decision_log.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if line.get("event") == "admission.decision":
                lines.append(line)
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for raw in self.decision_log.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if line.get("event") == name:
                out.append(line)
        return out


def webhook_configuration(
    name: str,
    webhook_name: str,
    url: str,
    ca_pem: bytes,
    *,
    failure_policy: str = "Fail",
    timeout: int = 10,
    namespace_selector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration as the chart renders it, pointing at a URL."""
    selector = namespace_selector or {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", OWN_NAMESPACE],
            }
        ]
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": webhook_name,
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [r.to_manifest() for r in DEFAULT_RULES],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": failure_policy,
                "timeoutSeconds": timeout,
                "matchPolicy": "Equivalent",
                "namespaceSelector": selector,
            }
        ],
    }


def marker_pod(name: str = "marker") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.example/pause:1"}]},
    }


def wait_for_webhook(kube: client.ApiClient, timeout: float = 30.0) -> None:
    """Block until the API server calls the webhook: a dry-run Pod in an unfenced namespace is denied."""
    core = client.CoreV1Api(kube)
    try:
        core.create_namespace({"metadata": {"name": MARKER_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.create_namespaced_pod(MARKER_NAMESPACE, marker_pod(), dry_run="All")
        except ApiException as exc:
            if exc.status == 403 and "is not fenced" in (exc.body or ""):
                return
        time.sleep(0.1)
    raise RuntimeError("the API server did not call kubefence within the timeout")


def denial(exc: ApiException) -> str:
    """The message of an admission denial, as the API server returned it."""
    body = orjson.loads(exc.body) if exc.body else {}
    return str(body.get("message", ""))


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    binary = Path(os.environ.get("KUBEFENCE_BIN", Path.home() / ".cache/kubefence/bin")) / "kubectl"
    return subprocess.run(
        [str(binary), "--kubeconfig", str(kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
