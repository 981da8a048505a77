"""A coordination.k8s.io/v1 Lease as leader election reads and writes it: its spec as a record
(client-go's LeaderElectionRecord; resourcelock/leaselock.go maps the fields), the MicroTime
format of its timestamps, and the API server calls it takes. No I/O here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.cluster.apiserver import Getter


class LeaseApi(Getter, Protocol):
    """The API server's reads and writes the elector needs (`transport.KubeTransport` is one)."""

    async def send(
        self, method: str, path: str, body: Mapping[str, Any], *, timeout: float | None
    ) -> dict[str, Any]:
        """POST or PUT a JSON object; the answer parsed; any other status raises ApiError."""
        ...


@dataclass(frozen=True)
class Record:
    """A Lease's spec as the election reads it (client-go's LeaderElectionRecord)."""

    holder: str = ""
    lease_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def micro_time(moment: dt.datetime) -> str:
    """metav1.MicroTime as the API server writes it: RFC 3339, UTC, six fractional digits."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
