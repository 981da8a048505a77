"""A scripted API server for the list/watch loops (informer, drift watch): lists from a dict,
watch streams fed by the test, refusals queued by the test. Implements `apiserver.Transport`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from webhook.cluster.apiserver import ApiError


class ScriptedWatches:
    """The watch half; subclasses answer `get` as their loop lists."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.version = 10
        self.objects: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
        self.gets: list[tuple[str, dict[str, str]]] = []
        self.watches: list[tuple[str, dict[str, str]]] = []
        self.refuse: list[ApiError] = []  # the next watches answer these
        self.streams: dict[str, asyncio.Queue[bytes]] = {}

    @contextlib.asynccontextmanager
    async def watch(self, path: str, query: Any, *, timeout: float) -> AsyncIterator[Any]:
        self.watches.append((path, dict(query)))
        if self.refuse:
            raise self.refuse.pop(0)
        stream: asyncio.Queue[bytes] = asyncio.Queue()
        self.streams[path] = stream

        class Lines:
            async def readline(self) -> bytes:
                return await stream.get()

        yield Lines()

    def send_to(self, path: str, event: str, obj: dict[str, Any]) -> None:
        self.streams[path].put_nowait(orjson.dumps({"type": event, "object": obj}) + b"\n")

    def watched_at(self, path: str) -> list[dict[str, str]]:
        return [q for p, q in self.watches if p == path]


class ScriptedLeases:
    """Leases as the API server keeps them: a create of an existing one and an update on a stale
    resourceVersion answer 409 Conflict; `fail` makes every request answer 500 while set;
    `pause` makes reads yield once, so two concurrent candidates read the same version.
    Implements `leaderelection.LeaseApi`."""

    def __init__(self) -> None:
        self.version = 100
        self.leases: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []  # (method, holderIdentity)
        self.fail = False
        self.pause = False

    def lease(
        self, namespace: str = "kubefence", name: str = "kubefence-notifier"
    ) -> dict[str, Any]:
        return self.leases[f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"]

    async def get(
        self, path: str, query: Any = (), *, timeout: float | None, accept: str = ""
    ) -> dict[str, Any]:
        if self.pause:
            await asyncio.sleep(0)
        if self.fail:
            raise ApiError(500, "scripted failure")
        if path not in self.leases:
            raise ApiError(404, "not found")
        return copy.deepcopy(self.leases[path])

    async def send(
        self, method: str, path: str, body: Any, *, timeout: float | None
    ) -> dict[str, Any]:
        if self.fail:
            raise ApiError(500, "scripted failure")
        metadata = body["metadata"]
        key = f"{path}/{metadata['name']}" if method == "POST" else path
        current = self.leases.get(key)
        if method == "POST" and current is not None:
            raise ApiError(409, "already exists")
        if method == "PUT" and (
            current is None
            or metadata.get("resourceVersion") != current["metadata"]["resourceVersion"]
        ):
            raise ApiError(409 if current is not None else 404, "conflict")
        self.version += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"] = {**metadata, "resourceVersion": str(self.version)}
        self.leases[key] = stored
        self.writes.append((method, stored["spec"]["holderIdentity"]))
        return copy.deepcopy(stored)
