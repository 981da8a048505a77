"""A local control plane for the end-to-end tests: a real etcd and a real kube-apiserver, with
auditing on, as subprocesses on loopback.

The binaries come from ``hack/build-control-plane.sh`` and are looked up in
``${KUBEFENCE_BIN:-~/.cache/kubefence/bin}``. The kube-apiserver flags are modelled on
controller-runtime envtest's. There is no kube-controller-manager, scheduler or kubelet: no
default ServiceAccount appears (the ServiceAccount admission plugin is off), Deployments create
no Pods and deleted namespaces stay Terminating. That is enough for admission tests.

With ``webhook_client_cn`` (off by default) the API server also gets an AdmissionConfiguration
that makes it show admission webhooks a client certificate of that commonName, signed by the
cluster CA (tests/e2e/admission_client_cert.py); ``issue_client_certificate`` signs others.

Plain module, no pytest: ``with ControlPlane() as cp: ...`` works from a script too.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from admission_client_cert import issue_client_certificate, write_admission_configuration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_AUDIT_POLICY = Path(__file__).with_name("audit-policy.yaml")
BINARIES = ("etcd", "kube-apiserver")
ADMIN_USER = "kubefence-admin"


def bin_dir() -> Path:
    """Where the control-plane binaries are: ``$KUBEFENCE_BIN`` or ``~/.cache/kubefence/bin``."""
    env = os.environ.get("KUBEFENCE_BIN")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kubefence" / "bin"


def missing_binaries(directory: Path | None = None) -> list[Path]:
    """The binaries ControlPlane needs that are not executable files in ``directory``."""
    d = directory or bin_dir()
    return [d / b for b in BINARIES if not os.access(d / b, os.X_OK)]


def audit_webhook_args(
    kubeconfig: Path,
    *,
    batch_max_wait: str = "1s",
    truncate_max_event_size: int | None = None,
    batch_max_size: int | None = None,
) -> list[str]:
    """kube-apiserver flags for an audit webhook backend (``ControlPlane(extra_apiserver_args=)``).

    With ``truncate_max_event_size`` the truncating backend wraps it
    (k8s.io/apiserver plugin/pkg/audit/truncate/truncate.go): an event over that size loses its
    request and response objects, and one still over it is dropped, never sent (the API server
    logs it and counts ``apiserver_audit_error_total{plugin="truncate"}``). The truncating
    backend's batch limit must be at least the event limit (pkg/server/options/audit.go).
    """
    args = [
        f"--audit-webhook-config-file={kubeconfig}",
        f"--audit-webhook-batch-max-wait={batch_max_wait}",
    ]
    if batch_max_size is not None:
        args.append(f"--audit-webhook-batch-max-size={batch_max_size}")
    if truncate_max_event_size is not None:
        args += [
            "--audit-webhook-truncate-enabled=true",
            f"--audit-webhook-truncate-max-event-size={truncate_max_event_size}",
            f"--audit-webhook-truncate-max-batch-size={max(truncate_max_event_size, 10 << 20)}",
        ]
    return args


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ExternalCluster:
    """A cluster the tests did not start, named by a kubeconfig (``KUBEFENCE_E2E_KUBECONFIG``).

    ``audit_log_path`` is None unless the caller can see that cluster's audit log.
    """

    kubeconfig_path: Path
    audit_log_path: Path | None = None
    local = False


class ControlPlaneError(RuntimeError):
    """The control plane did not start (the message carries the tail of its logs)."""


class _Proc:
    """A subprocess whose stdout and stderr go to one log file (appended across restarts)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_path: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self._log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
        self._log.flush()
        try:
            self.popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._log.close()
            raise

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait()
        finally:
            self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"({self.log_path}: {e})"
        return "\n".join(text.splitlines()[-lines:])


class ControlPlane:
    """etcd + kube-apiserver on loopback, auditing every request to a JSON-lines file.

    Clients authenticate with a static bearer token (user ``kubefence-admin`` in group
    ``system:masters``) and trust ``ca_path``; ``kubeconfig_path`` holds both.
    """

    local = True

    def __init__(
        self,
        *,
        binaries: Path | None = None,
        audit_policy: Path | None = None,
        work_dir: Path | None = None,
        extra_apiserver_args: list[str] | None = None,
        start_timeout: float = 90.0,
        webhook_client_cn: str | None = None,
    ) -> None:
        self.bin_dir = binaries or bin_dir()
        self.audit_policy_path = Path(audit_policy or DEFAULT_AUDIT_POLICY).resolve()
        self.extra_apiserver_args = list(extra_apiserver_args or [])
        self.start_timeout = start_timeout
        self._own_work_dir = work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="kubefence-e2e-")) if work_dir is None else work_dir
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.work_dir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.pki_dir = self.work_dir / "pki"
        self.audit_log_path = self.log_dir / "audit.log"
        self.kubeconfig_path = self.work_dir / "kubeconfig"
        self.token = secrets.token_hex(24)
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.server_url = f"https://127.0.0.1:{self.port}"
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.ca_path = self.pki_dir / "ca.crt"
        # The commonName of the certificate the API server shows webhooks (None: it shows none).
        self.webhook_client_cn = webhook_client_cn
        self.admission_config_path = self.work_dir / "admission-config.yaml"
        self.start_seconds: float | None = None
        self._etcd: _Proc | None = None
        self._apiserver: _Proc | None = None
        self._atexit_registered = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and kube-apiserver; return once ``/readyz`` answers ok."""
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise ControlPlaneError(
                f"missing {', '.join(map(str, missing))}: run hack/build-control-plane.sh"
            )
        t0 = time.monotonic()
        self.prepare()
        if self.webhook_client_cn is not None and not self.admission_config_path.exists():
            cert, key = self.issue_client_certificate(
                self.webhook_client_cn, self.pki_dir / "webhook-client"
            )
            write_admission_configuration(
                self.admission_config_path, self.work_dir / "webhook-client.kubeconfig", cert, key
            )
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0

    def prepare(self) -> None:
        """Write the PKI and the admin kubeconfig unless written before (``start`` calls it; call
        it first to issue certificates that ``extra_apiserver_args`` name)."""
        if not self.ca_path.exists():
            self._write_pki()
            self._write_kubeconfig()

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, then SIGKILL). Logs stay in ``log_dir``."""
        for attr in ("_apiserver", "_etcd"):
            proc: _Proc | None = getattr(self, attr)
            if proc is not None:
                setattr(self, attr, None)
                proc.stop()

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver only, on the same port, with the same etcd data."""
        if self._apiserver is not None:
            self._apiserver.stop()
            self._apiserver = None
        self._start_apiserver()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (``restart_apiserver`` brings it back)."""
        if self._apiserver is not None:
            self._apiserver.stop()
            self._apiserver = None

    def cleanup(self) -> None:
        """Stop, and remove the working directory if this object made it (logs included)."""
        self.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return all(p is not None and p.alive() for p in (self._etcd, self._apiserver))

    # -- processes ---------------------------------------------------------------------------

    def _etcd_supports(self, flag: str) -> bool:
        out = subprocess.run(
            [str(self.bin_dir / "etcd"), "--help"], capture_output=True, text=True, check=False
        )
        return flag in out.stdout + out.stderr

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        args = [
            str(self.bin_dir / "etcd"),
            "--name=kubefence-e2e",
            f"--data-dir={self.work_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kubefence-e2e={peer}",
            "--log-level=warn",
        ]
        if self._etcd_supports("--unsafe-no-fsync"):
            args.append("--unsafe-no-fsync")
        self._etcd = _Proc("etcd", args, self.log_dir / "etcd.log", self.work_dir)
        self._wait(
            self._etcd,
            lambda: _http_ok(f"{self.etcd_url}/health", None, None),
            what="etcd /health",
        )

    def _apiserver_args(self) -> list[str]:
        pki = self.pki_dir
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={self.ca_path}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            f"--audit-policy-file={self.audit_policy_path}",
            f"--audit-log-path={self.audit_log_path}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--profiling=false",
            *(
                [f"--admission-control-config-file={self.admission_config_path.resolve()}"]
                if self.webhook_client_cn is not None
                else []
            ),
            *self.extra_apiserver_args,
        ]

    def _start_apiserver(self) -> None:
        self._apiserver = _Proc(
            "kube-apiserver",
            self._apiserver_args(),
            self.log_dir / "kube-apiserver.log",
            self.work_dir,
        )
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        self._wait(
            self._apiserver,
            lambda: (
                _http_ok(f"{self.server_url}/readyz", ctx, self.token)
                and _http_ok(f"{self.server_url}/api/v1/namespaces/default", ctx, self.token)
            ),
            what="kube-apiserver /readyz",
        )

    def _wait(self, proc: _Proc, ready: Any, *, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not proc.alive():
                raise ControlPlaneError(
                    f"{proc.name} exited with {proc.popen.returncode} before {what} answered;"
                    f" log {proc.log_path}:\n{proc.tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready after {self.start_timeout:.0f}s;"
                    f" log {proc.log_path}:\n{proc.tail()}"
                )
            time.sleep(0.1)

    # -- files -------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        not_before = now - datetime.timedelta(hours=1)
        not_after = now + datetime.timedelta(days=2)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubefence-e2e-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )

        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes.default.svc"),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        def pem_key(k: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
            return k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )

        self.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.pki_dir / "ca.key", pem_key(ca_key))
        (self.pki_dir / "serving.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.pki_dir / "serving.key", pem_key(key))
        _write_private(self.pki_dir / "sa.key", pem_key(sa_key))
        (self.pki_dir / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # token,user,uid,"group1,group2"
        _write_private(
            self.pki_dir / "tokens.csv",
            f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'.encode(),
        )

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubefence-e2e",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority": str(self.ca_path),
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "kubefence-e2e",
                    "context": {"cluster": "kubefence-e2e", "user": ADMIN_USER},
                }
            ],
            "current-context": "kubefence-e2e",
        }
        _write_private(self.kubeconfig_path, yaml.safe_dump(config).encode())

    def issue_client_certificate(
        self, common_name: str, directory: Path, *, organizations: tuple[str, ...] = ()
    ) -> tuple[Path, Path]:
        """A client certificate and key signed by the cluster CA (as a kubelet's or a user's
        is), written to ``directory``; their absolute paths."""
        return issue_client_certificate(
            self.ca_path,
            self.pki_dir / "ca.key",
            common_name,
            directory,
            organizations=organizations,
        )

    # -- audit -------------------------------------------------------------------------------

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event written so far (one JSON object a line)."""
        return read_audit_log(self.audit_log_path)


def read_audit_log(path: Path) -> list[dict[str, Any]]:
    """The events of a JSON-lines audit log; a partly written last line is skipped."""
    events = []
    try:
        with path.open("rb") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
    except FileNotFoundError:
        return []
    return events


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _http_ok(url: str, ctx: ssl.SSLContext | None, token: str | None) -> bool:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


if __name__ == "__main__":
    # python tests/e2e/controlplane.py: start one, print how to reach it, run until Ctrl-C.
    cp = ControlPlane()
    cp.start()
    print(f"ready in {cp.start_seconds:.2f}s: export KUBECONFIG={cp.kubeconfig_path}")
    print(f"audit log {cp.audit_log_path}; logs in {cp.log_dir}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cp.stop()
