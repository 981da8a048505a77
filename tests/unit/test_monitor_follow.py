"""`correlate --follow`'s file reading across rotation and truncation, and the canary's deadline."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from webhook.correlate.detect import FEED_SILENT
from webhook.monitor import follow
from webhook.monitor.canary import CANARY_AGENT, CanaryWatch
from webhook.monitor.follow import follow_lines


def test_follow_reads_across_rename_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"one\ntwo\npart")
    got: list[bytes] = []
    done = threading.Event()
    grew = threading.Condition()

    def reader() -> None:
        for line in follow_lines(log, stop=done.is_set):
            with grew:
                got.append(line)
                grew.notify_all()

    def wait_for(n: int) -> None:
        with grew:
            assert grew.wait_for(lambda: len(got) >= n, timeout=10), got

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_for(2)
        with log.open("ab") as f:
            f.write(b"ial\n")  # the partly written line completes
        wait_for(3)
        os.rename(log, tmp_path / "audit.log.1")
        with (tmp_path / "audit.log.1").open("ab") as f:
            f.write(b"late\n")  # written to the old file just before the switch
        log.write_bytes(b"rotated\n")
        wait_for(5)
        log.write_bytes(b"")  # truncated in place
        with log.open("ab") as f:
            f.write(b"cut\n")  # shorter than what was read: a truncation is told by size
        wait_for(6)
    finally:
        done.set()
        thread.join(10)
    assert got == [b"one\n", b"two\n", b"partial\n", b"late\n", b"rotated\n", b"cut\n"]


def test_canary_alerts_once_when_overdue_and_again_after_it_came_back() -> None:
    watch = CanaryWatch(timeout=10.0)
    watch.sent(f"{CANARY_AGENT}p/1", 100.0)
    assert watch.check(105.0) is None
    assert watch.seen(f"{CANARY_AGENT}p/1", 106.0)
    watch.sent(f"{CANARY_AGENT}p/2", 110.0)
    alert = watch.check(121.0)
    assert alert is not None
    assert alert.event == FEED_SILENT
    assert watch.check(130.0) is None  # once until the feed is back
    watch.sent(f"{CANARY_AGENT}p/3", 131.0)
    assert watch.seen(f"{CANARY_AGENT}p/3", 132.0)
    watch.sent(f"{CANARY_AGENT}p/4", 140.0)
    assert watch.check(151.0) is not None
    assert not watch.seen("kubectl/v1.37", 152.0)


def test_canaries_held_through_an_outage_arriving_out_of_order_alert_once() -> None:
    """The API server retries each held batch on its own schedule: the first to arrive after
    the feed is back may carry an older canary than those still held. That is one outage."""
    watch = CanaryWatch(timeout=6.0)
    for n, sent in enumerate((3.0, 6.0, 9.0), start=2):  # the feed is cut after p/1
        watch.sent(f"{CANARY_AGENT}p/{n}", sent)
    assert watch.check(10.0) is not None  # p/2 is overdue
    assert watch.seen(f"{CANARY_AGENT}p/2", 12.0)  # its batch retried first
    assert watch.check(13.0) is None  # p/3 (sent at 6) is held, not lost: the feed is back
    assert watch.check(18.0) is None
    assert watch.check(18.5) is not None  # ... for `timeout` from then
    assert watch.seen(f"{CANARY_AGENT}p/4", 19.0)  # p/3 accounted for by a later canary
    watch.sent(f"{CANARY_AGENT}p/5", 20.0)
    assert watch.check(26.5) is not None  # the deadline is the usual one again


def test_lines_written_to_a_renamed_file_before_its_successor_appears_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the rename and the new file the path names nothing: the old file, still open for
    its writer, is read on rather than dropped."""
    log = tmp_path / "audit.log"
    log.write_bytes(b"one\n")
    lines = follow_lines(log, stop=lambda: False)
    assert next(lines) == b"one\n"
    polled = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the follower found nothing new: it polls again
        polled.set()
        real_sleep(0.01)

    monkeypatch.setattr(follow.time, "sleep", sleep)
    os.rename(log, tmp_path / "audit.log.1")
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(next(lines)), daemon=True)
    thread.start()
    assert polled.wait(10)  # it has looked with no file at the path
    with (tmp_path / "audit.log.1").open("ab") as f:
        f.write(b"late\n")
    thread.join(10)
    assert got == [b"late\n"]
    log.write_bytes(b"rotated\n")
    assert next(lines) == b"rotated\n"
    lines.close()  # the file it holds is closed with it
