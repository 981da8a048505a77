"""The README's first day, run as written on a fresh clone (issue 26, the last "Done when").

The commands come from the README itself — the first command of "Two commands" and the indented
blocks of "The first day, in order", by position — so an edit that breaks one fails here. They
run in bash, in a `git clone` of this repository's HEAD (commit first: uncommitted changes are
not in the clone), with `KUBECONFIG` naming a control plane of this module's own (scan reads the
whole cluster, so no other test's namespaces may be in it).

What a cluster with nodes would do is stood in for, and only that: `helm install` and `helm
upgrade --set mode=enforce` are the chart's `helm template` rendering (the README's own install
arguments, plus the upgrade's `--set`) — its ConfigMap applied, its config served by the clone's
`kubefence serve` as a host process behind its ValidatingWebhookConfiguration pointed at a `url:`
— and `kubectl logs` of the Deployment is that process's stdout. The correlate line reads the
control plane's audit log and audit Policy where a control-plane host keeps them.

The install runs offline: pip is pointed, by environment variables only, at the packages already
installed (PYTHONPATH) and at the build backend's wheels hack/setup.sh keeps
(`~/.cache/kubefence/wheels`); the command text is the README's.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import signal
import site
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, bin_dir, free_port, missing_binaries
from kubefence_process import RunningWebhook

from webhook import certs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from helmchart import helm, readme_install_as_template  # the chart's helper, one folder over

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
WHEELS = Path.home() / ".cache" / "kubefence" / "wheels"
DEMO_PORT = 8443  # `kubefence demo`'s default: the README's command names no port
# Where a control-plane host keeps what the correlate line reads; the test's control plane has
# them elsewhere.
HOST_AUDIT_LOG = "/var/log/kubernetes/audit.log"
HOST_AUDIT_POLICY = "/etc/kubernetes/audit-policy.yaml"


def section(heading: str) -> str:
    return README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def install_command() -> str:
    """The first indented line of "Two commands" (tests/unit/test_docs.py checks its shape)."""
    return section("Two commands").split("\n\n    ", 1)[1].split("\n", 1)[0]


def first_day_blocks() -> list[list[str]]:
    """The indented command blocks of "The first day, in order", in order, one line a command."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in section("The first day, in order").splitlines():
        if line.startswith("       ") and line.strip():
            current.append(line.strip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


@dataclass
class Shell:
    """bash in the clone's folder, as a newcomer's terminal: the virtualenv's bin first on PATH
    once made, kubectl beside it, KUBECONFIG the cluster. `set` lines carry over."""

    clone: Path
    env: dict[str, str]
    sets: str = ""

    def run(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if line.startswith("set "):
            self.sets += line + "\n"
            return subprocess.CompletedProcess(line, 0, "", "")
        return subprocess.run(
            ["bash", "-c", self.sets + line],
            cwd=self.clone, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip


@dataclass
class Served:
    """The chart's rendering served by the clone's kubefence on loopback."""

    hook: RunningWebhook
    config: Path


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("first-day-path") / "kubefence"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if missing_binaries():
        if os.environ.get("KUBEFENCE_E2E") == "1":
            pytest.fail(f"no local control plane in {bin_dir()}: run hack/build-control-plane.sh")
        pytest.skip("no local control plane binaries")
    cp = ControlPlane(work_dir=tmp_path_factory.mktemp("first-day-cp"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def shell_env(clone: Path, cluster: ControlPlane) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(
        # The clone's kubefence, not this worktree's; its dependencies the ones installed here.
        PYTHONPATH=os.pathsep.join(site.getsitepackages()),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(WHEELS),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PATH=os.pathsep.join(
            [
                str(clone / ".venv" / "bin"),
                str(Path(sys.executable).parent),
                str(bin_dir()),
                env.get("PATH", ""),
            ]
        ),
        KUBECONFIG=str(cluster.kubeconfig_path),
    )
    return env


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {path} (exit {process.poll()}):\n{content[-3000:]}")


def rendering(clone: Path, extra_sets: list[str]) -> list[dict[str, Any]]:
    """The README's `helm install` as `helm template`, with an upgrade's `--set`s after it."""
    args = [
        str(clone / "charts" / "kubefence") if a.endswith("charts/kubefence") else a
        for a in readme_install_as_template()
    ]
    return [d for d in yaml.safe_load_all(helm(*args, *extra_sets)) if d]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def decisions_so_far(log: Path) -> int:
    return log.read_text(errors="replace").count('"admission.decision"')


def test_the_readme_first_day_path(clone: Path, cluster: ControlPlane) -> None:
    started = time.monotonic()
    if not WHEELS.is_dir():
        pytest.fail(f"no build backend wheels in {WHEELS}: run hack/setup.sh")
    assert port_is_free(DEMO_PORT), f"port {DEMO_PORT} (kubefence demo's) is taken"
    blocks = first_day_blocks()
    assert len(blocks) == 6, blocks
    check, warn, scan, fix, enforce, correlate = blocks
    sh = Shell(clone, shell_env(clone, cluster))

    # 1. Install and watch it decide: the README's one line, the demo left serving.
    line = install_command()
    assert line.endswith("&& kubefence demo"), line
    out, err = clone / "install.out", clone / "install.err"
    with out.open("wb") as o, err.open("wb") as e:
        demo = subprocess.Popen(
            ["bash", "-c", line], cwd=clone, env=sh.env, stdout=o, stderr=e,
            start_new_session=True,
        )  # fmt: skip
    try:
        banner = wait_for(err, "Ctrl-C stops.", demo, timeout=300)
        print(f"\ninstall + demo start: {time.monotonic() - started:.1f} s")
        assert "Successfully installed kubefence" in out.read_text()
        curls = re.findall(r"^  (curl .* --data @\S+ \S+)$", banner, re.M)
        assert len(curls) == 2, banner
        allowed, denied = (sh.run(c) for c in curls)
        assert allowed.returncode == 0, allowed
        assert '"allowed":true' in allowed.stdout, allowed.stdout
        assert denied.returncode == 0, denied
        assert '"allowed":false' in denied.stdout, denied.stdout
        assert 'namespace \\"sandbox\\" is not fenced' in denied.stdout, denied.stdout
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        code = demo.wait(30)
    assert code == 130, err.read_text()[-2000:]
    where = sh.run("python -c 'import webhook; print(webhook.__file__)'")
    assert where.stdout.strip() == str(clone / "webhook" / "__init__.py"), where

    # 2. Check manifests: the fixture repository, findings in several files.
    (line,) = check
    done = sh.run(line)
    assert done.returncode == 1, done
    files = set(re.findall(r"^(tests/fixtures/check-repo/\S+?):\d+: ", done.stdout, re.M))
    assert len(files) >= 3, done.stdout
    assert re.search(r"^\d+ objects judged in \d+ files: 3 would be denied", done.stdout, re.M)

    # A cluster that already runs a workload in a namespace that is not fenced.
    for command in ("kubectl create namespace shop", "kubectl -n shop create deployment web --image=nginx"):  # fmt: skip
        assert sh.run(command).returncode == 0

    # 3. Warn: the chart's `mode: warn` rendering, installed (`helm install` stands in).
    served = serve(clone, cluster, sh, rendering(clone, []))
    try:
        fetch, dry_run = warn
        done = sh.run(fetch)
        assert done.returncode == 0, done
        assert (clone / "config.yaml").read_text() == served.config.read_text()
        done = sh.run(dry_run)
        assert done.returncode == 0, done
        assert "deployment.apps/web created (server dry run)" in done.stdout
        assert re.search(
            r'^Warning: namespace "default" has no default-deny NetworkPolicy', done.stderr, re.M
        ), done

        # 4. Scan: enforce would deny the Deployment's next Pod.
        (line,) = scan
        done = sh.run(line)
        assert done.returncode == 1, done
        assert re.search(r"^GATE: enforce would deny \d+ requests? this cluster re-creates \(exit 1\)",
                         done.stdout, re.M), done.stdout  # fmt: skip
        assert re.search(r"^  shop +Deployment web ", done.stdout, re.M), done.stdout

        # 5. Fix, under pipefail, then scan again.
        assert fix[0] == "set -o pipefail"
        sh.run(fix[0])
        done = sh.run(fix[1])
        assert done.returncode == 0, done
        assert (
            "networkpolicy.networking.k8s.io/kubefence-default-deny created"
            in done.stdout.splitlines()
        ), done
        done = sh.run(fix[2])
        assert done.returncode == 0, done
        assert "GATE: enforce would deny nothing this cluster re-creates (exit 0)" in done.stdout

        # 6. Enforce: the gate, then the upgrade as the chart renders it.
        gate, upgrade = enforce[0].split(" && ", 1)
        assert gate == fix[2]
        done = sh.run(gate)
        assert done.returncode == 0, done
        words = shlex.split(upgrade)
        assert words[:7] == ["helm", "upgrade", "kubefence", "charts/kubefence", "-n",
                             "kubefence-system", "--reuse-values"], words  # fmt: skip
        upgrade_to(served, sh, rendering(clone, words[7:]))
        create, denied_line, fence, allowed_line = enforce[1:]
        assert sh.run(create).returncode == 0
        done = sh.run(denied_line)
        assert done.returncode == 1, done
        assert 'admission webhook "validate.kubefence.io" denied the request' in done.stderr, done
        assert 'namespace "kubefence-check" is not fenced' in done.stderr, done
        done = sh.run(fence)
        assert done.returncode == 0, done
        assert "kubefence-default-deny created" in done.stdout, done
        done = eventually_passes(sh, allowed_line)
        assert "deployment.apps/web created (server dry run)" in done.stdout, done
        assert "Warning" not in done.stderr, done

        # 7. Correlate: the decision log (`kubectl logs` stands in) and the audit log.
        logs, line = correlate
        assert logs.startswith(
            "kubectl -n kubefence-system logs deployment/kubefence > decisions.log"
        )
        assert served.hook.decision_log == clone / "decisions.log"
        assert HOST_AUDIT_LOG in line, line
        assert HOST_AUDIT_POLICY in line, line
        line = line.replace(HOST_AUDIT_LOG, str(cluster.audit_log_path))
        line = line.replace(HOST_AUDIT_POLICY, str(cluster.audit_policy_path))
        done = sh.run(line)
        assert done.returncode == 0, done
        assert re.search(r"^BYPASSES: 0\b", done.stdout, re.M), done.stdout
        assert re.search(r"requests? before kubefence was registered", done.stdout), done.stdout
    finally:
        served.hook.stop()
    print(f"first day path: {time.monotonic() - started:.1f} s")


def serve(clone: Path, cluster: ControlPlane, sh: Shell, docs: list[dict[str, Any]]) -> Served:
    """What `helm install` leaves: the ConfigMap in the cluster, kubefence serving its config,
    the ValidatingWebhookConfiguration pointing at it (here a `url:`)."""
    configmap = only(docs, "ConfigMap")
    assert configmap["metadata"]["name"] == "kubefence-config"
    assert sh.run("kubectl create namespace kubefence-system").returncode == 0
    apply(sh, configmap)
    work = clone.parent / "served"
    work.mkdir()
    config = work / "config.yaml"
    config.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(work / "certs", ca_cert, ca_key, cert, key)
    port = free_port()
    log = clone / "decisions.log"
    with log.open("wb") as out, (work / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            [str(clone / ".venv" / "bin" / "kubefence"), "serve",
             "--kubeconfig", str(cluster.kubeconfig_path),
             "--cert", str(paths.cert), "--key", str(paths.key), "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port), "--drain-seconds", "0"],
            stdout=out, stderr=err, env=sh.env,
        )  # fmt: skip
    hook = RunningWebhook(work, port, paths.ca_cert.read_bytes(), process, config, log)
    hook.wait_ready()
    configuration = only(docs, "ValidatingWebhookConfiguration")
    for entry in configuration["webhooks"]:
        entry["clientConfig"] = {
            "url": f"{hook.url}/validate",
            "caBundle": base64.b64encode(hook.ca_pem).decode(),
        }
    before = decisions_so_far(log)
    apply(sh, configuration)
    # The API server loads configurations through an informer: wait for its first call.
    deadline = time.monotonic() + 30
    while decisions_so_far(log) == before:
        assert time.monotonic() < deadline, "the API server did not call kubefence"
        sh.run("kubectl -n kube-public create configmap x --dry-run=server")  # not decided
        sh.run("kubectl -n shop run marker --image=nginx --dry-run=server")
    return Served(hook, config)


def upgrade_to(served: Served, sh: Shell, docs: list[dict[str, Any]]) -> None:
    """What `helm upgrade` changes: the ConfigMap, re-read by kubefence without a restart."""
    configmap = only(docs, "ConfigMap")
    assert "mode: enforce" in configmap["data"]["config.yaml"]
    apply(sh, configmap)
    applied = len(served.hook.events("config.applied"))
    served.config.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
    deadline = time.monotonic() + 30
    while len(served.hook.events("config.applied")) == applied:
        assert time.monotonic() < deadline, served.hook.stderr_tail()
        time.sleep(0.1)


def apply(sh: Shell, obj: dict[str, Any]) -> None:
    done = subprocess.run(
        ["kubectl", "apply", "-f", "-"], input=yaml.safe_dump(obj), env=sh.env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done


def eventually_passes(sh: Shell, line: str) -> subprocess.CompletedProcess[str]:
    """The line, again while kubefence's informer has not yet seen the fence just applied."""
    deadline = time.monotonic() + 15
    while True:
        done = sh.run(line)
        if done.returncode == 0 or time.monotonic() > deadline:
            assert done.returncode == 0, done
            return done
        time.sleep(0.2)
