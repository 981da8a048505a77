"""The API server as kubefence reads it: JSON GETs and watch streams behind two small Protocols.

`webhook.cluster.transport` implements them over the Kubernetes client; the tests' scripted API
servers implement them over dicts. Nothing here opens a connection.

Invariants:
- Every answer but a success raises `ApiError`, carrying the status, the Status message, and (when
  an answer came) the HTTP reason phrase and the body as sent.
- `pages` reads a LIST page by page with `resourceVersion` unset, so the pages are one consistent
  snapshot (served from etcd, never from a watch cache that may lag).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

JSON = "application/json"
# PartialObjectMetadataList: only the items' metadata, for lists that count or name objects.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
RUNNING_PODS = "status.phase!=Succeeded,status.phase!=Failed"  # a fieldSelector


class ApiError(Exception):
    """The API server answered with an error status, or sent an ERROR watch event."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        phrase: str | None = None,
        body: str | bytes | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.phrase = phrase  # the HTTP reason phrase ("Forbidden"); None for a watch event
        self.body = body  # the answer as sent; None for a watch event

    @property
    def expired(self) -> bool:
        """410 Gone: the resourceVersion or continue token is too old; list again."""
        return self.status == 410


class Lines(Protocol):
    async def readline(self) -> bytes:
        """The next line of a watch stream; b"" once the server has ended it."""
        ...


class Getter(Protocol):
    """JSON GETs; every answer but a success raises ApiError."""

    async def get(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        timeout: float | None,
        accept: str = JSON,
    ) -> dict[str, Any]:
        """The parsed answer; `timeout` in seconds (None: no limit)."""
        ...


class Transport(Getter, Protocol):
    """JSON GETs and watch streams (`webhook.cluster.transport.KubeTransport`)."""

    def watch(
        self, path: str, query: Sequence[tuple[str, str]], *, timeout: float
    ) -> AbstractAsyncContextManager[Lines]: ...


async def pages(
    getter: Getter,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    *,
    page_size: int | None,
    timeout: float | None,
    accept: str = JSON,
) -> AsyncIterator[dict[str, Any]]:
    """Every page of a LIST, following its continue tokens (`page_size` None: one unpaged GET)."""
    token = ""
    while True:
        asked = list(query)
        if page_size is not None:
            asked.append(("limit", str(page_size)))
        if token:
            asked.append(("continue", token))
        page = await getter.get(path, asked, timeout=timeout, accept=accept)
        yield page
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return
