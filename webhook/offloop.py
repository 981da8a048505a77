"""Costly decisions off the event loop, queued per namespace: one namespace's cost is never
another's latency.

A NetworkPolicy decision pools the namespace's policies (tens of milliseconds for the costliest
pool the default limits allow, `webhook.netpol`); run on the loop, thirty of them at once held
every other admission for seconds. `OffLoop.run` runs such work on a small pool of worker
threads, at most `per_key` at once for one key (the namespace): a storm in one namespace waits
behind itself, and its requests past their wait bound get `Busy` (the caller denies: fail
closed). The loop thread keeps the GIL often enough to serve the rest (CPython hands it over
every `sys.getswitchinterval()`, 5 ms). The work must be pure: it runs on another thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

WORKERS = 2  # two namespaces' analyses interleave (the GIL), so neither waits for the other's end
PER_NAMESPACE = 1  # analyses of one namespace at once


class Busy(Exception):
    """Waited past the bound for a turn of the key."""


class OffLoop:
    def __init__(self, workers: int = WORKERS, per_key: int = PER_NAMESPACE) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kubefence-analysis")
        self._per_key = per_key
        self._slots: dict[str, _Slot] = {}
        self.waiting = 0  # requests waiting for their key's turn, across keys
        self.busy = 0  # requests that waited past their bound

    async def run(self, key: str, wait: float, work: Callable[[], T]) -> T:
        """`work()` on a worker thread once `key` has a free slot (waiting at most `wait`
        seconds for it, else `Busy`); the slot is held until the work ends."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(asyncio.Semaphore(self._per_key))
        slot.users += 1
        self.waiting += 1
        try:
            async with asyncio.timeout(wait):
                await slot.semaphore.acquire()
        except BaseException as exc:
            self._leave(key, slot, acquired=False)
            if isinstance(exc, TimeoutError):
                self.busy += 1
                raise Busy(key) from None
            raise
        finally:
            self.waiting -= 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        except BaseException:
            self._leave(key, slot, acquired=True)
            raise
        # The slot is given back when the thread is done, not when the caller stops waiting (a
        # client gone away): the bound holds for the threads themselves.
        future.add_done_callback(lambda _: self._leave(key, slot, acquired=True))
        return await asyncio.shield(future)

    def _leave(self, key: str, slot: _Slot, *, acquired: bool) -> None:
        if acquired:
            slot.semaphore.release()
        slot.users -= 1
        if slot.users == 0 and self._slots.get(key) is slot:
            del self._slots[key]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Slot:
    __slots__ = ("semaphore", "users")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.users = 0  # callers waiting for it or whose work runs: the entry goes with the last
