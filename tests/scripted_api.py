"""A scripted API server for the list/watch loops (informer, drift watch): lists from a dict,
watch streams fed by the test, refusals queued by the test. Implements `apiserver.Transport`."""

from __future__ import annotations

import asyncio
import contextlib
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
