"""`serve --workers N` as real processes: one port shared through SO_REUSEPORT, every worker
serving, SIGTERM draining all of them without a lost request, and no worker outliving the group."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from serving_kit import HOST, LoadClient, ServeProcess, TlsMaterial

from webhook.cli import main
from webhook.commands.demo import sample_review
from webhook.commands.workers import worst


def worker_args(tls_material: TlsMaterial, directory: Path, state: Path, *extra: str) -> list[str]:
    cert, key = tls_material.write(directory)
    return [
        "--state", str(state), "--cert", str(cert), "--key", str(key),
        "--host", HOST, "--port", "0", "--workers", "2", *extra,
    ]  # fmt: skip


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a reaper that is not us."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def decisions_seen(port: int, ca_file: Path, scrapes: int) -> set[float]:
    """The decision totals of the workers that answered `scrapes` new connections."""
    totals = set()
    for _ in range(scrapes):
        context = ssl.create_default_context(cafile=str(ca_file))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(f"https://{HOST}:{port}/metrics") as response,
        ):
            text = await response.text()
        totals.add(
            sum(
                float(line.rpartition(" ")[2])
                for line in text.splitlines()
                if line.startswith("kubefence_decisions_total{")
            )
        )
    return totals


async def decide_once(port: int, ca_file: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    review = sample_review("one-more", "shop", "web")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(f"https://{HOST}:{port}/validate", json=review) as response,
    ):
        assert response.status == 200


async def test_every_worker_serves_on_the_shared_port(
    serve_process: Callable[[list[str]], ServeProcess],
    tls_material: TlsMaterial,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    args = worker_args(
        tls_material, tmp_path, state_dir, "--drain-seconds", "0", "--probe-port", "0"
    )
    server = serve_process(args)
    port = await server.start(started=2)
    started = server.events("server.started")
    assert {e["port"] for e in started} == {port}
    assert len({e["pid"] for e in started}) == 2
    (probe_port,) = {e["probe_port"] for e in started}
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            async with session.get(f"http://{HOST}:{probe_port}/readyz") as response:
                assert response.status == 200
    load = LoadClient(port, tls_material.ca_file)
    load.start(keepalive=0, fresh=1)
    while load.ok < 201:
        await asyncio.sleep(0.01)
    await load.stop()
    assert load.failures == []
    decided = load.ok
    if decided % 2 == 0:  # the load stops where it stops: one more makes the total odd
        await decide_once(port, tls_material.ca_file)
        decided += 1
    # An odd number of decisions cannot split evenly: two workers show two different totals.
    totals = await decisions_seen(port, tls_material.ca_file, scrapes=40)
    assert len(totals) == 2
    assert sum(totals) == decided
    server.signal(signal.SIGTERM)
    assert await server.wait() == 0


async def test_sigterm_drains_every_worker_without_losing_a_request(
    serve_process: Callable[[list[str]], ServeProcess],
    tls_material: TlsMaterial,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    args = worker_args(tls_material, tmp_path, state_dir, "--drain-seconds", "1.5")
    server = serve_process(args)
    port = await server.start(started=2)
    load = LoadClient(port, tls_material.ca_file)
    load.start(keepalive=2, fresh=2)
    while load.ok < 100:
        await asyncio.sleep(0.05)
    sigterm = time.monotonic()
    server.signal(signal.SIGTERM)
    code = await server.wait(timeout=20)
    exited_after = time.monotonic() - sigterm
    await load.stop()
    assert code == 0
    assert load.failures == []
    assert any(t > sigterm + 1.0 for t in load.ok_times)  # still served late in the drain
    assert load.no_connection > 0
    assert len(server.events("server.stopped")) == 2
    assert exited_after < 25


@pytest.fixture
async def two_workers(
    serve_process: Callable[[list[str]], ServeProcess],
    tls_material: TlsMaterial,
    state_dir: Path,
    tmp_path: Path,
) -> ServeProcess:
    """serve with two workers and no drain period, both started."""
    server = serve_process(worker_args(tls_material, tmp_path, state_dir, "--drain-seconds", "0"))
    await server.start(started=2)
    return server


async def test_a_worker_that_dies_takes_the_group_down(
    two_workers: ServeProcess,
) -> None:
    server = two_workers
    victim, survivor = (e["pid"] for e in server.events("server.started"))
    os.kill(victim, signal.SIGKILL)
    assert await server.wait(timeout=20) == 128 + signal.SIGKILL
    assert [e["pid"] for e in server.events("workers.worker_exited")] == [victim]
    assert not alive(survivor)
    assert len(server.events("server.stopped")) == 1  # the survivor drained and stopped


async def test_workers_stop_when_the_parent_is_killed(
    two_workers: ServeProcess,
) -> None:
    server = two_workers
    pids = [e["pid"] for e in server.events("server.started")]
    server.signal(signal.SIGKILL)
    await server.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived their parent"
        await asyncio.sleep(0.1)
    assert len(server.events("server.orphaned")) == 2


def test_bad_input_fails_before_any_worker_starts(
    tls_material: TlsMaterial, tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = worker_args(tls_material, tmp_path, state_dir)
    (tmp_path / "tls.key").write_text("junk\n")
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err == f"kubefence serve: {tmp_path / 'tls.key'}: not a PEM private key\n"


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([0, 0], 0), ([0, 2], 2), ([1, 0, 2], 2), ([0, -9], 137), ([-15, 1], 143), ([], 0)],
)
def test_the_worst_exit_code_wins(codes: list[int], expected: int) -> None:
    assert worst(codes) == expected


async def test_sigint_stops_every_worker_and_exits_130_as_ctrl_c(
    two_workers: ServeProcess,
) -> None:
    server = two_workers
    server.signal(signal.SIGINT)
    assert await server.wait(timeout=20) == 130
    assert len(server.events("server.stopped")) == 2  # each drained (SIGTERM from the parent)
