"""Every command on every kind of broken input: exit 2 and one stderr line naming what is wrong.

Each case runs `python -m webhook ...` as a user would (a fresh process, its own stderr), so a
traceback from anywhere (argument parsing, imports, the event loop, the Kubernetes client) shows.
The line must name the file (or the flag) the user has to fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from objects import workload_review

from webhook import certs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30

# A kubeconfig that loads; the broken ones below differ from it in one field each.
_CONTEXT = "- name: c\n  context: {cluster: k, user: u}\n"
_CLUSTER = '- name: k\n  cluster: {server: "https://127.0.0.1:1"}\n'
_USER = "- name: u\n  user: {token: abc}\n"


def _kubeconfig(
    contexts: str = _CONTEXT, clusters: str = _CLUSTER, users: str = _USER, current: str = "c"
) -> str:
    return (
        f"apiVersion: v1\nkind: Config\ncurrent-context: {current}\n"
        f"contexts:\n{contexts}clusters:\n{clusters}users:\n{users}"
    )


# Broken files by kind of brokenness; each a name under the workspace and its content.
BROKEN: dict[str, bytes] = {
    "empty.yaml": b"",
    "not-yaml.yaml": b"rules: [unclosed\n",
    "list.yaml": b"- a\n- b\n",
    "scalar.yaml": b"42\n",
    "binary.yaml": b"\xff\xfe\x00\x01garbage",
    "not-json.json": b"{not json",
    "list.json": b"[1, 2]\n",
    "not-pem.pem": b"this is not a PEM file\n",
    "config-unknown-key.yaml": b"defaultDeny: {mood: enforce}\n",
    "config-bad-mode.yaml": b"hostNetwork: {mode: loud}\n",
    "config-bad-policy-file.yaml": b"auditScope: {policyFile: missing-policy.yaml}\n",
    "policy-rules-not-list.yaml": b"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: 5\n",
    "requests-not-json.jsonl": b'{"verb": "get"}\nnot json\n',
    "kube-no-current-context.yaml": b"apiVersion: v1\nkind: Config\n",
    "kube-unknown-context.yaml": _kubeconfig(current="nope").encode(),
    "kube-unknown-cluster.yaml": _kubeconfig(clusters='- name: other\n  cluster: {server: "https://127.0.0.1:1"}\n').encode(),
    "kube-no-server.yaml": _kubeconfig(clusters="- name: k\n  cluster: {}\n").encode(),
    "kube-contexts-not-list.yaml": _kubeconfig(contexts="  c: {}\n").encode(),
    "kube-missing-ca.yaml": _kubeconfig(
        clusters='- name: k\n  cluster: {server: "https://127.0.0.1:1", certificate-authority: no-such-ca.crt}\n'
    ).encode(),
    "kube-bad-ca-data.yaml": _kubeconfig(
        clusters='- name: k\n  cluster: {server: "https://127.0.0.1:1", certificate-authority-data: "!!x"}\n'
    ).encode(),
    "kube-missing-client-cert.yaml": _kubeconfig(
        users="- name: u\n  user: {client-certificate: no-such.crt, client-key: no-such.key}\n"
    ).encode(),
}  # fmt: skip

# Folders given to --state, each broken in one way.
STATES: dict[str, dict[str, bytes]] = {
    "state-not-yaml": {"bad.yaml": b"kind: [\n"},
    "state-binary": {"bad.yaml": b"\xff\xfe\x00"},
    "state-scalar-document": {"bad.yaml": b"just a string\n"},
    "state-nameless-policy": {
        "policy.yaml": b"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {}\n"
    },
    "state-items-not-list": {"list.yaml": b"apiVersion: v1\nkind: List\nitems: {a: 1}\n"},
    "state-policy-types-string": {
        "policy.yaml": b"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        b"metadata: {name: deny, namespace: team}\nspec: {podSelector: {}, policyTypes: Ingress}\n"
    },
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("broken")
    bundle = certs.ensure_dev_certs(root / "certs")
    assert bundle.cert.name == "tls.crt"
    (root / "dir").mkdir()
    (root / "a-file").write_text("a file, not a folder\n")
    for name, content in BROKEN.items():
        (root / name).write_bytes(content)
    for name, files in STATES.items():
        (root / name).mkdir()
        for file, content in files.items():
            (root / name / file).write_bytes(content)
    (root / "state").mkdir()
    (root / "state" / "team.yaml").write_text(
        "{apiVersion: v1, kind: Namespace, metadata: {name: team}}\n"
    )
    (root / "review.json").write_bytes(orjson.dumps(workload_review("Deployment")))
    (root / "policy.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata}]\n"
    )
    # Valid logs (an empty one is itself refused), so that a case breaks one input at a time.
    fixtures = Path(__file__).parent / "fixtures" / "correlate"
    (root / "audit.log").write_bytes((fixtures / "edge.audit.log").read_bytes())
    (root / "decisions.log").write_bytes((fixtures / "edge.decisions.log").read_bytes())
    unreadable = root / "unreadable.yaml"
    unreadable.write_text("a: 1\n")
    unreadable.chmod(0)
    return root


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    names: str  # what the one stderr line must contain: the file or the flag


SERVE = ("serve", "--cert", "certs/tls.crt", "--key", "certs/tls.key", "--port", "0")
REVIEW = ("review", "review.json")
SCAN = ("scan",)
AUDIT = ("audit-level", "--verb", "get", "--resource", "pods", "--policy")
CORRELATE = ("correlate", "--audit-log", "audit.log", "--decision-log", "decisions.log")
CERTS = ("certs", "generate", "--service", "kf", "--namespace", "ns", "--out")

# Kinds of broken file, for every flag that takes a file of that format.
# (root reads a file whatever its mode: the unreadable kind is there for everyone else)
UNREADABLE = ("unreadable.yaml",) if os.geteuid() != 0 else ()
FILE_KINDS = ("missing.yaml", "dir", *UNREADABLE, "a-file/below")
YAML_KINDS = ("not-yaml.yaml", "list.yaml", "scalar.yaml", "binary.yaml")
KUBECONFIG_KINDS = (
    "empty.yaml",
    *YAML_KINDS,
    *(name for name in BROKEN if name.startswith("kube-")),
)
STATE_KINDS = ("missing", "a-file", *STATES)
CONFIG_KINDS = (
    *YAML_KINDS,
    "config-unknown-key.yaml",
    "config-bad-mode.yaml",
    "config-bad-policy-file.yaml",
)


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}

    def add(name: str, argv: tuple[str, ...], names: str) -> None:
        assert name not in cases, name
        cases[name] = Case(argv, names)

    # --config: every command that takes one.
    config_takers = {
        "serve": SERVE,
        "demo": ("demo", "--out", "demo-certs", "--port", "0"),
        "review": (*REVIEW, "--state", "state"),
        "scan": (*SCAN, "--state", "state"),
        "correlate": CORRELATE,
    }
    for command, argv in config_takers.items():
        for kind in (*FILE_KINDS, *CONFIG_KINDS):
            add(f"{command}-config-{kind}", (*argv, "--config", kind), kind)
    # --state: every command that takes one.
    for command, argv in {"serve": SERVE, "review": REVIEW, "scan": SCAN}.items():
        for kind in STATE_KINDS:
            add(f"{command}-state-{kind}", (*argv, "--state", kind), kind)
    # --kubeconfig: serve and scan.
    for command, argv in {"serve": SERVE, "scan": SCAN}.items():
        for kind in (*FILE_KINDS, *KUBECONFIG_KINDS):
            add(f"{command}-kubeconfig-{kind}", (*argv, "--kubeconfig", kind), kind)
    # serve's TLS material.
    tls = ("serve", "--port", "0", "--state", "state")
    for kind in (*FILE_KINDS, "empty.yaml", "not-pem.pem"):
        add(f"serve-cert-{kind}", (*tls, "--cert", kind, "--key", "certs/tls.key"), kind)
        add(f"serve-key-{kind}", (*tls, "--cert", "certs/tls.crt", "--key", kind), kind)
        add(f"serve-client-ca-{kind}", (*SERVE, "--state", "state", "--client-ca", kind), kind)
    add("serve-key-of-another-cert", (*tls, "--cert", "certs/tls.crt", "--key", "certs/ca.key"), "certs/ca.key")  # fmt: skip
    # serve's other flags.
    for flag, value in (
        ("--port", "70000"),
        ("--port", "-1"),
        ("--port", "http"),
        ("--probe-port", "70000"),
        ("--drain-seconds", "-1"),
        ("--grace-seconds", "nan"),
        ("--workers", "0"),
    ):
        argv = (*SERVE[:-2], "--state", "state", flag, value)
        add(f"serve-{flag[2:]}-{value}", argv, flag)
    add("serve-no-cluster", SERVE, "--kubeconfig")
    add("scan-default-kubeconfig-missing", SCAN, "missing-kubeconfig")
    # demo
    for kind in ("a-file", "a-file/below"):
        add(f"demo-out-{kind}", ("demo", "--out", kind, "--port", "0"), kind)
    add("demo-port-70000", ("demo", "--out", "demo-certs", "--port", "70000"), "--port")
    # review's AdmissionReview
    for kind in (*FILE_KINDS, "empty.yaml", "not-json.json", "list.json", "binary.yaml"):
        add(f"review-file-{kind}", ("review", kind, "--state", "state"), kind)
    # audit-level
    for kind in (*FILE_KINDS, "empty.yaml", *YAML_KINDS, "policy-rules-not-list.yaml"):
        add(f"audit-level-policy-{kind}", (*AUDIT, kind), kind)
    for kind in (*FILE_KINDS, "binary.yaml", "requests-not-json.jsonl"):
        argv = ("audit-level", "--policy", "policy.yaml", "--requests", kind)
        add(f"audit-level-requests-{kind}", argv, kind)
    # correlate's logs and output (what a log's content must be is correlate's own concern)
    for kind in FILE_KINDS:
        add(f"correlate-audit-log-{kind}", ("correlate", "--audit-log", kind, "--decision-log", "decisions.log"), kind)  # fmt: skip
        add(f"correlate-decision-log-{kind}", ("correlate", "--audit-log", "audit.log", "--decision-log", kind), kind)  # fmt: skip
    add("correlate-out-dir", (*CORRELATE, "--out", "dir"), "dir")
    add("correlate-since-garbage", (*CORRELATE, "--since", "yesterday"), "--since")
    # certs generate
    add("certs-out-a-file", (*CERTS, "a-file"), "a-file")
    add("certs-out-below-a-file", (*CERTS, "a-file/below"), "a-file/below")
    for kind in (*FILE_KINDS, "empty.yaml", "not-pem.pem"):
        add(f"certs-ca-cert-{kind}", (*CERTS, "out", "--ca-cert", kind, "--ca-key", "certs/ca.key"), kind)  # fmt: skip
        add(f"certs-ca-key-{kind}", (*CERTS, "out", "--ca-cert", "certs/ca.crt", "--ca-key", kind), kind)  # fmt: skip
    add("certs-ca-key-of-another-cert", (*CERTS, "out", "--ca-cert", "certs/ca.crt", "--ca-key", "certs/tls.key"), "certs/tls.key")  # fmt: skip
    add("certs-days-0", (*CERTS, "out", "--days", "0"), "--days")
    add("certs-san-garbage", (*CERTS, "out", "--san", "not a name!"), "--san")
    add("certs-service-bad", ("certs", "generate", "--service", "Bad_Name", "--namespace", "ns", "--out", "out"), "--service")  # fmt: skip
    return cases


CASES = _cases()


def run_kubefence(
    workspace: Path, argv: tuple[str, ...], stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # No ambient cluster: without --kubeconfig, a command must not find one by itself.
        "KUBECONFIG": str(workspace / "missing-kubeconfig"),
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "webhook", *argv],
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, workspace: Path
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """The selected cases, started side by side (each is mostly interpreter start-up)."""
    selected = [
        item.callspec.id
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_broken_input_is_one_line_naming_it_and_exit_2"
        and item.callspec.id in CASES
    ]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        yield {name: pool.submit(run_kubefence, workspace, CASES[name].argv) for name in selected}


@pytest.mark.parametrize("name", CASES)
def test_broken_input_is_one_line_naming_it_and_exit_2(
    outcomes: dict[str, Future[subprocess.CompletedProcess[str]]], name: str
) -> None:
    case = CASES[name]
    result = outcomes[name].result()
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert case.names in lines[0]
    assert lines[0].startswith("kubefence")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""


# Commands whose answer goes to stdout, each with input it answers.
STDOUT_WRITERS = {
    "certs": (*CERTS, "piped-certs"),
    "audit-level": (*AUDIT, "policy.yaml"),
    "scan": (*SCAN, "--state", "state"),
    "review": (*REVIEW, "--state", "state"),
}


@pytest.mark.parametrize("name", STDOUT_WRITERS)
def test_a_closed_stdout_ends_quietly_with_exit_141(workspace: Path, name: str) -> None:
    """`kubefence certs generate ... | true`: the reader is gone before the answer is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run_kubefence(workspace, STDOUT_WRITERS[name], stdout=write_end)
    finally:
        os.close(write_end)
    for trace in ("Traceback", "Exception ignored", "BrokenPipeError"):
        assert trace not in result.stderr, result.stderr
    assert result.returncode == 141
