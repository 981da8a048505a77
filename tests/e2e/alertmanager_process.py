"""A real Alertmanager (v0.35.0, built by hack/build-control-plane.sh alertmanager) on loopback, for
`monitor --alertmanager`: no clustering (`--cluster.listen-address=` empty), a storage path of its
own (silences and the notification log survive a restart there; alerts do not: they are in memory
only), and its v2 API read and written with the standard library."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from controlplane import bin_dir, free_port

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


def binary() -> Path:
    return bin_dir() / "alertmanager"


def require_binary() -> Path:
    """The binary; a skip without it, a failure with KUBEFENCE_E2E=1 (as for the control plane)."""
    path = binary()
    if not os.access(path, os.X_OK):
        message = f"no {path}: run hack/build-control-plane.sh alertmanager"
        if os.environ.get("KUBEFENCE_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Alertmanager:
    work: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        (self.work / "alertmanager.yml").write_text(CONFIG)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        self.process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return orjson.loads(r.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=orjson.dumps(body),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            return orjson.loads(r.read())

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts; `filters` as its query (silenced=false, active=true, ...)."""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        try:
            return list(self.get(f"/api/v2/alerts?{query}"))
        except (urllib.error.URLError, OSError):
            return []
