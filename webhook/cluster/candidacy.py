"""Who runs for a Lease: its namespace, its name and this process's identity among the candidates.

`serve` (the notifier) and `monitor` (the active monitor) both elect on a Lease with
`webhook.cluster.leaderelection.Elector`; this is what they hand it. No request is made here:
the namespace comes from the flag, the environment or the Pod's service-account mount.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Election:
    namespace: str  # "": no election
    name: str
    identity: str


def election_namespace(flag: str | None) -> str:
    """The Lease's namespace: the flag, else $POD_NAMESPACE, else the Pod's service account's."""
    if flag is not None:
        return flag
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return ""


def identity() -> str:
    """This process among the candidates: the Pod (or host) and a random suffix, as client-go's
    users write `hostname + "_" + uuid` — workers of one Pod, and a restarted Pod, differ."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"
