"""Costly decisions off the event loop, in turns shared fairly: one namespace's cost is never
another's latency.

A NetworkPolicy decision pools the namespace's policies (tens of milliseconds for the costliest
pool the default limits allow, `webhook.netpol`); run on the loop, thirty of them at once held
every other admission for seconds. Such work runs in a *turn* (`OffLoop.turn`):

- at most `workers` turns at once (one worker thread each), at most `per_key` for one key (the
  namespace): a namespace's decisions are judged one after another, and what the turn does on
  the loop after the work (recording the approval) happens before the namespace's next turn
  starts — so two changes of one namespace are never judged apart from each other's approval;
- waiting turns are granted fairly: keys in rotation, and within a key its callers in rotation,
  so neither a storm across many namespaces nor a forger's storm in one namespace goes in front
  of everyone else's turns;
- a turn not granted within its wait raises `Busy` (the caller denies: fail closed), so waiting
  for a worker, not only for the namespace, comes out of the request's budget.

The loop thread keeps the GIL often enough to serve the rest (CPython hands it over every
`sys.getswitchinterval()`, 5 ms). The work must be pure: it runs on another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

WORKERS = 2  # two namespaces' analyses interleave (the GIL), so neither waits for the other's end
PER_NAMESPACE = 1  # turns of one namespace at once


class Busy(Exception):
    """Waited past the bound for a turn."""


class Turn:
    """Held while a key's work runs and its result is applied on the loop."""

    def __init__(self, executor: ThreadPoolExecutor | None) -> None:
        self._executor = executor
        self.pending: asyncio.Future[object] | None = None

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` on a worker thread (inline, for a turn that needs none)."""
        if self._executor is None:
            return work()
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        self.pending = future  # type: ignore[assignment]
        return await asyncio.shield(future)


INLINE = Turn(None)  # work that is cheap enough for the loop: no thread, no wait


class OffLoop:
    def __init__(self, workers: int = WORKERS, per_key: int = PER_NAMESPACE) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kubefence-analysis")
        self._free = workers
        self._per_key = per_key
        self._running: dict[str, int] = {}
        self._lanes: dict[str, _Lane] = {}  # key -> its waiting turns
        self._ready: deque[str] = deque()  # keys with a waiting turn and a free slot, in turn
        self._queued: set[str] = set()  # the keys in `_ready`
        self.waiting = 0  # turns waiting, across keys
        self.busy = 0  # turns not granted within their wait

    @contextlib.asynccontextmanager
    async def turn(self, key: str, caller: str, wait: float) -> AsyncIterator[Turn]:
        """A turn of `key` for `caller`, waiting at most `wait` seconds for it (else `Busy`).

        It ends when the block does, or, if the block is left while its work still runs on a
        thread (a caller gone away), when that work ends: the bounds hold for the threads.
        """
        await self._acquire(key, caller, wait)
        turn = Turn(self._executor)
        try:
            yield turn
        finally:
            pending = turn.pending
            if pending is not None and not pending.done():
                pending.add_done_callback(lambda _: self._release(key))
            else:
                self._release(key)

    async def _acquire(self, key: str, caller: str, wait: float) -> None:
        if not self._ready and key not in self._lanes and self._may_run(key):
            self._grant(key)  # nobody waits before it
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.add(caller, granted)
        self._enqueue(key)
        self.waiting += 1
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(granted)
        except BaseException as exc:
            if granted.done():  # granted as the wait ended: give it back
                self._release(key)
            else:
                granted.cancel()
                lane.remove(caller, granted)
                if not lane:
                    self._drop(key)
            if isinstance(exc, TimeoutError):
                self.busy += 1
                raise Busy(key) from None
            raise
        finally:
            self.waiting -= 1

    def _may_run(self, key: str) -> bool:
        return self._free > 0 and self._running.get(key, 0) < self._per_key

    def _grant(self, key: str) -> None:
        self._free -= 1
        self._running[key] = self._running.get(key, 0) + 1

    def _release(self, key: str) -> None:
        self._free += 1
        left = self._running[key] - 1
        if left:
            self._running[key] = left
        else:
            del self._running[key]
        if key in self._lanes:
            self._enqueue(key)
        self._dispatch()

    def _enqueue(self, key: str) -> None:
        if key not in self._queued and self._running.get(key, 0) < self._per_key:
            self._queued.add(key)
            self._ready.append(key)

    def _drop(self, key: str) -> None:
        del self._lanes[key]
        if key in self._queued:
            self._queued.discard(key)
            self._ready.remove(key)

    def _dispatch(self) -> None:
        """Grant waiting turns while workers are free: the next key in rotation, its next caller."""
        while self._free > 0 and self._ready:
            key = self._ready.popleft()
            self._queued.discard(key)
            lane = self._lanes.get(key)
            if lane is None or not self._may_run(key):
                continue  # re-queued when its running turn ends
            granted = lane.pop()
            if not lane:
                del self._lanes[key]
            self._grant(key)
            granted.set_result(None)
            if key in self._lanes:
                self._enqueue(key)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Lane:
    """One key's waiting turns, its callers in rotation (each caller's own in arrival order)."""

    __slots__ = ("_by_caller", "_order")

    def __init__(self) -> None:
        self._by_caller: dict[str, deque[asyncio.Future[None]]] = {}
        self._order: deque[str] = deque()

    def __bool__(self) -> bool:
        return bool(self._order)

    def add(self, caller: str, granted: asyncio.Future[None]) -> None:
        queue = self._by_caller.get(caller)
        if queue is None:
            queue = self._by_caller[caller] = deque()
            self._order.append(caller)
        queue.append(granted)

    def pop(self) -> asyncio.Future[None]:
        caller = self._order.popleft()
        queue = self._by_caller[caller]
        granted = queue.popleft()
        if queue:
            self._order.append(caller)
        else:
            del self._by_caller[caller]
        return granted

    def remove(self, caller: str, granted: asyncio.Future[None]) -> None:
        queue = self._by_caller.get(caller)
        if queue is None or granted not in queue:
            return
        queue.remove(granted)
        if not queue:
            del self._by_caller[caller]
            self._order.remove(caller)
