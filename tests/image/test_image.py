"""The container image, built and run without a Docker engine (buildah, chroot isolation).

hack/build-image.sh builds it (a debootstrap base made once and cached); then, as the image's own
numeric user: `kubefence --version`, and `kubefence serve` with exactly the chart's arguments
(read from the rendered Deployment), the chart's rendered config, generated certificates and a
`--state` folder, reached from the host over TLS: /healthz, /readyz, one allowed and one denied
AdmissionReview. Nothing may be written outside the mounts and /tmp (the chart mounts the root
read-only). Needs root and buildah (Debian: apt-get install buildah podman debootstrap); skipped
without them, failed instead when KUBEFENCE_IMAGE_REQUIRED=1 (CI). KUBEFENCE_IMAGE=ref tests an
image already built instead of building one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from helmchart import REPO, config_files, container, render, tool

from webhook.commands.demo import sample_review

BUILD_SCRIPT = REPO / "hack" / "build-image.sh"
DEFAULT_IMAGE = "localhost/kubefence:dev"
# Where the chart mounts what the arguments name (charts/kubefence/templates/deployment.yaml).
CONFIG_DIR = "/etc/kubefence/config"
TLS_DIR = "/etc/kubefence/tls"
STATE_DIR = "/state"
# What `buildah run` itself puts into a container's layer.
BUILDAH_RUN_FILES = {"etc", "etc/hosts", "etc/resolv.conf", "etc/hostname", "run"}


def _require() -> None:
    missing = [t for t in ("buildah", "podman") if shutil.which(t) is None]
    problem = ""
    if missing:
        problem = (
            f"{' and '.join(missing)} not installed: the image is not built here"
            " (Debian: apt-get install -y buildah podman debootstrap)"
        )
    elif os.geteuid() != 0:
        problem = "buildah with chroot isolation runs as root here"
    if problem:
        # CI installs buildah and sets KUBEFENCE_IMAGE_REQUIRED=1: a missing tool must not pass.
        if os.environ.get("KUBEFENCE_IMAGE_REQUIRED") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    if tool("helm") is None:
        pytest.fail("helm not found: run hack/build-control-plane.sh helm")


def buildah(*args: str) -> str:
    proc = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\nimage: {line}", flush=True)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    _require()
    given = os.environ.get("KUBEFENCE_IMAGE")
    if given:
        yield given
        return
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(BUILD_SCRIPT), DEFAULT_IMAGE], capture_output=True, text=True, check=False
    )
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        pytest.fail(f"hack/build-image.sh failed after {seconds:.0f}s:\n{proc.stderr[-4000:]}")
    # The script's own lines: base made or reused, build time, size.
    summary = [line for line in proc.stderr.splitlines() if line.startswith("build-image:")]
    print("\n".join(summary), file=sys.stderr)
    yield DEFAULT_IMAGE


@pytest.fixture(scope="module")
def config(image: str) -> dict[str, Any]:
    """The image's OCI config."""
    return dict(json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"])


@pytest.fixture
def working_container(image: str) -> Iterator[str]:
    name = buildah("from", "--pull-never", image).strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


def user_of(config: dict[str, Any]) -> tuple[int, int]:
    user, _, group = str(config.get("User", "")).partition(":")
    assert user.isdigit(), f"image user {config.get('User')!r} is not numeric"
    assert group.isdigit(), f"image group {config.get('User')!r} is not numeric"
    return int(user), int(group)


def test_image_config(
    config: dict[str, Any], image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    uid, gid = user_of(config)
    assert uid != 0
    assert gid != 0
    assert config["Entrypoint"] == ["kubefence", "serve"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    size = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    report(capsys, f"{image} user {uid}:{gid}, size {int(size) / 1e6:.1f} MB")


def test_version(config: dict[str, Any], working_container: str) -> None:
    uid, gid = user_of(config)
    out = buildah(
        "run", "--isolation", "chroot", "--user", f"{uid}:{gid}", working_container,
        "--", "kubefence", "--version",
    )  # fmt: skip
    assert out.strip() == "kubefence 0.1.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def diff_paths(container_name: str) -> set[str]:
    """Paths the container's writable layer holds (relative to its root)."""
    merged = Path(buildah("mount", container_name).strip())
    try:
        upper = merged.parent / "diff"
        return {str(p.relative_to(upper)) for p in upper.rglob("*")}
    finally:
        buildah("umount", container_name)


def get(url: str, context: ssl.SSLContext, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def test_serve_with_the_charts_arguments(
    config: dict[str, Any],
    working_container: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uid, gid = user_of(config)
    port = free_port()
    docs = render({"containerPort": port, "mode": "enforce"})  # so the open namespace is denied
    args = container(docs)["args"]
    assert f"--port={port}" in args

    # The files the chart mounts, made here: its ConfigMap, generated certificates, a cluster.
    config_files(docs, tmp_path / "config")
    certs = tmp_path / "certs"
    subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "generate", "--service", "kf-kubefence",
         "--namespace", "kubefence-system", "--out", str(certs),
         "--san", "127.0.0.1", "--san", "localhost"],
        capture_output=True, check=True,
    )  # fmt: skip
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("tls.crt", "tls.key"):
        shutil.copy(certs / name, tls / name)
        os.chown(tls / name, 0, gid)  # as the Secret volume: fsGroup, mode 0440
        os.chmod(tls / name, 0o440)
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(REPO / "webhook" / "demo" / "cluster.yaml", state / "cluster.yaml")

    before = diff_paths(working_container)
    command = [*config["Entrypoint"], *args, "--state", STATE_DIR]
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        ["buildah", "run", "--isolation", "chroot", "--user", f"{uid}:{gid}",
         "-v", f"{tmp_path / 'config'}:{CONFIG_DIR}:ro",
         "-v", f"{tls}:{TLS_DIR}:ro",
         "-v", f"{state}:{STATE_DIR}:ro",
         working_container, "--", *command],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        base = f"https://127.0.0.1:{port}"
        t0 = time.monotonic()
        while True:
            with contextlib.suppress(OSError):
                if get(f"{base}/healthz", context)[0] == 200:
                    break
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                log.seek(0)
                pytest.fail(f"kubefence serve did not answer /healthz:\n{log.read()[-3000:]}")
            time.sleep(0.2)
        report(capsys, f"serve answered /healthz {time.monotonic() - t0:.1f}s after start")
        assert get(f"{base}/readyz", context)[0] == 200

        def review(uid_: str, namespace: str) -> dict[str, Any]:
            body = json.dumps(sample_review(uid_, namespace, "web")).encode()
            status, raw = get(f"{base}/validate", context, body)
            assert status == 200, raw
            return dict(json.loads(raw)["response"])

        allowed = review("smoke-allowed", "shop")
        assert allowed["uid"] == "smoke-allowed"
        assert allowed["allowed"] is True
        denied = review("smoke-denied", "sandbox")
        assert denied["uid"] == "smoke-denied"
        assert denied["allowed"] is False
        assert denied["auditAnnotations"]["decision"] == "deny"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.seek(0)
    output = log.read()
    log.close()
    decisions = [json.loads(line) for line in output.splitlines() if '"admission.decision"' in line]
    assert {d["decision_id"] for d in decisions} == {"smoke-allowed", "smoke-denied"}

    # A read-only root holds: the run wrote nothing but mount points (and /tmp, allowed).
    mounts = {CONFIG_DIR, TLS_DIR, STATE_DIR}
    allowed_dirs = {str(Path(m).relative_to("/")) for m in mounts}
    allowed_dirs |= {
        str(p.relative_to("/")) for m in mounts for p in Path(m).parents if p != Path("/")
    }
    written = {
        p for p in diff_paths(working_container) - before
        if p not in allowed_dirs and p not in ("tmp", "run") and not p.startswith(("tmp/", "run/"))
        and p not in BUILDAH_RUN_FILES
    }  # fmt: skip
    assert not written, f"written outside the mounts and /tmp: {sorted(written)}"
