"""Reading the monitor's request bodies: whole, within a shared byte budget, at a minimum rate.

Invariants:
- A body is read to its end however it arrives (TLS records, chunked, paced by the network: one
  read returns only what is buffered), with a running count: over `MAX_BODY_BYTES` it is refused
  (413) whether or not it declared a Content-Length.
- Every body being read or waiting to be judged holds its bytes of one `BodyBudget` shared by all
  senders, counted as they arrive (a declared Content-Length takes nothing: senders declaring
  64 MiB and sending nothing would hold every real batch at 503); past it the answer is 503
  with Retry-After, which the API server re-sends, so slow or many senders cannot exhaust memory.
- After `READ_GRACE_SECONDS` a body must keep arriving at `MIN_READ_RATE` (408 slower), never
  longer than the API server's own `BODY_READ_TIMEOUT` for one send: a sender trickling bytes
  cannot hold its share of the budget for long.
- No HTTP answer is made here: a refusal is a `Refusal`, which the server turns into one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import StreamReader

# A 4xx loses the whole batch. A batch of 400 Metadata-level events is well under 1 MiB, but
# the API server copies a client's Audit-ID header and URI into the event as they came, up to
# its 1 MiB header block (k8s.io/apiserver@v0.37.2 pkg/endpoints/filters/audit_init.go): 17
# padded requests beside an exec were a 17 MiB batch, refused whole under the old 16 MiB. The
# truncating backend does not cap a batch (it wraps the buffered backend and sees one event at a
# time: plugin/pkg/audit/truncate/truncate.go), so a batch is at most
# --audit-webhook-batch-max-size events of --audit-webhook-truncate-max-event-size each; the
# README pairs them under this cap (30 events of 2 MiB). Parsing holds no more than one slice or
# one event (`webhook.monitor.batch`), so the body's bytes are what a larger cap costs.
MAX_BODY_BYTES = 64 << 20
BODY_READ_TIMEOUT = 30.0  # the API server's own timeout for one send
# A body must arrive at MIN_READ_RATE after a grace, and within the API server's own 30 s per
# try (the full 64 MiB needs 2.2 MiB/s: any cluster network): a sender trickling bytes is cut
# off rather than holding a share of the body budget for the whole timeout.
READ_GRACE_SECONDS = 5.0
MIN_READ_RATE = 1 << 20  # bytes/s
# Bodies being read, waiting or being judged, together: one body of the full cap at a time (a
# second is answered 503 with Retry-After and re-sent), within the chart's 256Mi with the parse.
BODY_BUDGET_BYTES = MAX_BODY_BYTES


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a body was not read: the HTTP status to answer, a one-line reason, bytes seen."""

    status: int  # 408 too slow, 413 too large, 503 the budget spent
    reason: str
    size: int


def too_large(size: int) -> Refusal:
    return Refusal(413, f"batch exceeds {MAX_BODY_BYTES} bytes", size)


@dataclass
class BodyBudget:
    """Bytes of request bodies held at once, by every sender together."""

    limit: int
    held: int = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class Hold:
    """The bytes one request holds of the shared body budget, given back when it is answered."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> bool:
        if not self.budget.take(size):
            return False
        self.held += size
        return True

    def release(self) -> None:
        self.budget.give_back(self.held)
        self.held = 0


async def read_body(content: StreamReader, hold: Hold, length: int | None) -> bytes | Refusal:
    """The whole body, read to its end however it arrives (in TLS records, chunked, paced by the
    network: one read returns only what is buffered), within the body budget (bytes taken as
    they arrive: a declared `length` holds nothing, it is only checked against MAX_BODY_BYTES)
    and at `MIN_READ_RATE` or faster after `READ_GRACE_SECONDS`; else the answer: 413 over
    MAX_BODY_BYTES, 503 when the budget is spent, 408 when too slow."""
    if length is not None and length > MAX_BODY_BYTES:
        return too_large(length)
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks: list[bytes] = []
    size = 0
    while True:
        deadline = started + min(READ_GRACE_SECONDS + size / MIN_READ_RATE, BODY_READ_TIMEOUT)
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await content.readany()
        except TimeoutError:
            return Refusal(
                408,
                f"body arrived slower than {MIN_READ_RATE >> 10} KiB/s"
                f" ({size} bytes in {loop.time() - started:.0f}s)",
                size,
            )
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return too_large(size)
        if not hold.take(len(chunk)):
            return Refusal(503, "the monitor holds as many batch bodies as it may", size)
        chunks.append(chunk)
