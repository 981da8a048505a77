"""A real Alertmanager (v0.35.0, built by hack/build-control-plane.sh alertmanager) on loopback, for
`monitor --alertmanager`: no clustering (`--cluster.listen-address=` empty), a storage path of its
own (silences and the notification log survive a restart there; alerts do not: they are in memory
only), and its v2 API read and written with the standard library."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from controlplane import bin_dir, free_port
from prerequisites import unavailable

# One receiver that notifies nobody; alerts grouped by name and cluster, flushed at once.
CONFIG = """\
route:
  receiver: blackhole
  group_by: [alertname, cluster]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
"""


def bypass_event(i: int, namespace: str, user: str) -> dict[str, Any]:
    """An audit event the monitor alerts `evasion.bypass` (`dodged`): a pod create that no
    webhook decided, as the API server's audit webhook backend sends it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"{i:08x}-0000-4000-8000-{time.time_ns() % 10**12:012d}",
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{namespace}/pods",
        "verb": "create",
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.1"],
        "userAgent": "kubectl/v1.37.0",
        "objectRef": {"resource": "pods", "namespace": namespace, "name": f"p{i}"},
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }


def event_list(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})


def binary() -> Path:
    return bin_dir() / "alertmanager"


def require_binary() -> Path:
    """The binary; a skip without it, a failure with KUBEFENCE_E2E=1 (as for the control plane)."""
    path = binary()
    if not os.access(path, os.X_OK):
        unavailable(f"no {path}: run hack/build-control-plane.sh alertmanager")
    return path


@dataclass
class Alertmanager:
    """`web_config`: its --web.config.file (TLS, client certificates, basic auth), with the
    `client` context and `authorization` header this harness then reads its API with."""

    work: Path
    port: int = 0
    web_config: str | None = None
    client: ssl.SSLContext | None = None
    authorization: str | None = None
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        (self.work / "alertmanager.yml").write_text(CONFIG)
        if self.web_config is not None:
            (self.work / "web.yml").write_text(self.web_config)

    @property
    def url(self) -> str:
        scheme = "https" if self.client is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _open(self, request: urllib.request.Request | str) -> Any:
        if isinstance(request, str):
            request = urllib.request.Request(request)
        if self.authorization is not None:
            request.add_header("Authorization", self.authorization)
        return urllib.request.urlopen(request, timeout=5, context=self.client)

    def start(self) -> None:
        self.runs += 1
        log = (self.work / f"alertmanager-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(require_binary()),
                f"--config.file={self.work / 'alertmanager.yml'}",
                f"--storage.path={self.work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                *([f"--web.config.file={self.work / 'web.yml'}"] if self.web_config else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = (self.work / f"alertmanager-{self.runs}.log").read_text(errors="replace")
                raise AssertionError(f"Alertmanager did not start:\n{text}")
            time.sleep(0.1)

    def ready(self) -> bool:
        try:
            with self._open(f"{self.url}/-/ready") as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        self.process = None

    def get(self, path: str) -> Any:
        with self._open(f"{self.url}{path}") as r:
            return orjson.loads(r.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=orjson.dumps(body),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with self._open(request) as r:
            return orjson.loads(r.read())

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts; `filters` as its query (silenced=false, active=true, ...)."""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        try:
            return list(self.get(f"/api/v2/alerts?{query}"))
        except (urllib.error.URLError, OSError):
            return []
