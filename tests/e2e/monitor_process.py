"""`kubefence monitor` as a child process, and its audit webhook wiring: the serving and client
PKI, the ports, and the kubeconfig of the API server's `--audit-webhook-config-file`, which the
monitor tests of this folder start the same way (test_monitor.py, test_alertmanager.py,
test_first_day.py, test_monitor_blinding.py, test_monitor_canary.py)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trustme
from controlplane import audit_webhook_args, free_port

from webhook import certs

T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


@dataclass
class Monitor:
    work: Path
    port: int
    probe_port: int
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def log(self) -> Path:
        return self.work / f"monitor-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with self.log.open("wb") as out, (self.work / f"stderr-{self.runs}.log").open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webhook", "monitor", *self.args], stdout=out, stderr=err
            )
        eventually("the monitor is ready", self._ready, timeout=30)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                (self.work / f"stderr-{self.runs}.log").read_text(errors="replace")
            )
        try:
            url = f"http://127.0.0.1:{self.probe_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)

    def lines(self, run: int | None = None) -> list[dict[str, Any]]:
        out = []
        for n in [run] if run is not None else range(1, self.runs + 1):
            for raw in (self.work / f"monitor-{n}.log").read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(raw))
        return out

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == kind]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples on /metrics: every series, or those with each of `labels`."""
        url = f"http://127.0.0.1:{self.probe_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        wanted = [f'{label}="{value}"' for label, value in labels.items()]
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " ")) and all(w in line for w in wanted)
        )


@dataclass
class SenderPki:
    """The monitor's serving pair (its CA in `paths.ca_cert`) and the API server's client pair,
    signed by `client_ca`, which the monitor's --client-ca trusts."""

    paths: certs.Paths
    client_ca: Path
    client_cert: Path
    client_key: Path
    senders: trustme.CA  # signs more senders (serve's --decisions-client-cert)

    def issue_client(self, name: str) -> tuple[Path, Path]:
        """A client pair of commonName `name` that the monitor's --client-ca trusts."""
        leaf = self.senders.issue_cert(f"{name}.client", common_name=name)
        cert, key = self.client_ca.with_name(f"{name}.crt"), self.client_ca.with_name(f"{name}.key")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


def sender_pki(work: Path) -> SenderPki:
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(work / "certs", ca_cert, ca_key, cert, key)
    senders = trustme.CA()
    client_ca = work / "client-ca.crt"
    senders.cert_pem.write_to_path(str(client_ca))
    leaf = senders.issue_cert("kube-apiserver")
    client_cert, client_key = work / "apiserver.crt", work / "apiserver.key"
    leaf.cert_chain_pems[0].write_to_path(str(client_cert))
    leaf.private_key_pem.write_to_path(str(client_key))
    return SenderPki(paths, client_ca, client_cert, client_key, senders)


def audit_webhook_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> None:
    """The kubeconfig of --audit-webhook-config-file: the receiver's URL and CA, the client pair."""
    path.write_bytes(
        orjson.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "monitor",
                        "cluster": {"server": server, "certificate-authority": str(ca)},
                    }
                ],
                "users": [
                    {
                        "name": "apiserver",
                        "user": {"client-certificate": str(cert), "client-key": str(key)},
                    }
                ],
                "contexts": [
                    {"name": "monitor", "context": {"cluster": "monitor", "user": "apiserver"}}
                ],
                "current-context": "monitor",
            }
        )
    )


@dataclass
class AuditFeed:
    """A monitor's ports and PKI, and the kubeconfig that points an API server's audit webhook
    backend at it (at `port`, or at whatever `send_to` names, such as a relay in front of it)."""

    work: Path
    pki: SenderPki
    port: int
    probe_port: int
    kubeconfig: Path

    def send_to(self, port: int) -> None:
        """(Re)write the kubeconfig: the API server sends to 127.0.0.1:`port`, which the
        monitor's certificate names."""
        audit_webhook_kubeconfig(
            self.kubeconfig,
            f"https://127.0.0.1:{port}/audit",
            self.pki.paths.ca_cert,
            self.pki.client_cert,
            self.pki.client_key,
        )

    def apiserver_args(
        self, *, truncate_max_event_size: int | None = None, batch_max_size: int | None = None
    ) -> list[str]:
        """kube-apiserver flags for this backend (batches of 1s at the most), as
        controlplane.audit_webhook_args."""
        return audit_webhook_args(
            self.kubeconfig,
            truncate_max_event_size=truncate_max_event_size,
            batch_max_size=batch_max_size,
        )

    def monitor(self, extra: list[str]) -> Monitor:
        """The monitor this feed is for: its serving pair, the senders' CA, loopback, its ports."""
        return Monitor(
            self.work,
            self.port,
            self.probe_port,
            [
                "--cert", str(self.pki.paths.cert), "--key", str(self.pki.paths.key),
                "--client-ca", str(self.pki.client_ca),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--probe-port", str(self.probe_port),
                *extra,
            ],
        )  # fmt: skip


def audit_feed(work: Path) -> AuditFeed:
    feed = AuditFeed(
        work, sender_pki(work), free_port(), free_port(), work / "audit-webhook.kubeconfig"
    )
    feed.send_to(feed.port)
    return feed
