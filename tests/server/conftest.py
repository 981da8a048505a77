"""Fixtures of the serving tests: a throwaway CA, the demo cluster as a --state folder, and
`serve` processes that are killed when a test ends."""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from serving_kit import ServeProcess, TlsMaterial

from webhook import certs


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    directory = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = certs.generate_ca("kubefence-test-ca", days=30)
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return TlsMaterial(directory, ca_cert, ca_key, ca_file)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo cluster as a --state folder: `shop` fenced, `sandbox` not."""
    directory = tmp_path_factory.mktemp("state")
    text = importlib.resources.files("webhook.demo").joinpath("cluster.yaml").read_text("utf-8")
    (directory / "cluster.yaml").write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
async def serve_process() -> AsyncIterator[Callable[[list[str]], ServeProcess]]:
    started: list[ServeProcess] = []

    def make(args: list[str]) -> ServeProcess:
        process = ServeProcess(args)
        started.append(process)
        return process

    yield make
    for process in started:
        await process.kill()
