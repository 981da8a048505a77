"""`kubefence correlate --follow FILE`: the monitor's detections over a growing audit log file.

The file backend writes one Event a line and rotates by renaming (`--audit-log-maxsize`): the file
is re-opened when the path names another inode, or read from the start when it shrank
(truncated; as with `tail -F`, a truncated file that has already grown past the point read is
not told apart from one that grew). A partly written last line waits for its newline. Lines go
through the same `AuditReader` screen and `Detector` as `correlate` and `monitor`; alerts are
printed as the monitor logs them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.detect import Alert, Detector
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.records import SourceStats

POLL_SECONDS = 0.25
MAX_LINE = 16 << 20  # a longer "line" is dropped (no newline in sight: not an audit log)


def follow_lines(
    path: Path, *, from_start: bool = True, stop: Callable[[], bool] = lambda: False
) -> Iterator[bytes]:
    """The complete lines of `path` as they are written, across rotation and truncation."""
    handle: BinaryIO | None = None
    inode: tuple[int, int] | None = None
    st: os.stat_result | None
    partial = b""
    start = from_start
    try:
        while not stop():
            if handle is None:
                try:
                    handle = path.open("rb")
                except FileNotFoundError:
                    time.sleep(POLL_SECONDS)
                    continue
                opened = os.fstat(handle.fileno())
                inode = (opened.st_dev, opened.st_ino)
                if not start:
                    handle.seek(0, os.SEEK_END)
                start, partial = True, b""  # a rotated-in file is read from its start
            chunk = handle.read(1 << 20)
            if chunk:
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                if len(partial) > MAX_LINE:
                    partial = b""
                for line in lines:
                    yield line + b"\n"
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is None:
                # Renamed away, its successor not created yet: the old file may still be written
                # (a writer that has it open), so keep reading it until a new file takes the path.
                time.sleep(POLL_SECONDS)
                continue
            if (
                st.st_dev,
                st.st_ino,
            ) != inode:  # rotated: finish the old file, then open the new one
                rest = handle.read()
                if rest:
                    for line in (partial + rest).split(b"\n")[:-1]:
                        yield line + b"\n"
                handle.close()
                handle = None
                continue
            if st.st_size < handle.tell():  # truncated in place (copytruncate)
                handle.seek(0)
                partial = b""
                continue
            time.sleep(POLL_SECONDS)
    finally:  # also when the caller stops iterating
        if handle is not None:
            handle.close()


def follow_alerts(lines: Iterator[bytes], options: CorrelateOptions) -> Iterator[Alert]:
    """The alerts of audit log lines, as the monitor raises them."""
    detector = Detector(options)
    stats = SourceStats("follow")
    for record in AuditReader(options).records(lines, stats):
        yield from detector.feed(record)
