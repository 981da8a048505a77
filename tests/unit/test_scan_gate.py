"""`kubefence scan` is the enforce gate: exit 1 exactly when `mode: enforce` would deny something
this cluster re-creates, the advisory findings apart (exit 0, 1 with --strict), and `--fix`
exits 0 once printed so `scan --fix | kubectl apply -f -` passes under pipefail."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from objects import deny_all, netpol, workload
from test_scan import FakeApiServer, fake_cluster, namespace, pod, state  # noqa: F401

from webhook.check.judge import requests_for
from webhook.cli import main
from webhook.config import load_settings, parse_settings
from webhook.findings.enforce_modes import CHART_ENFORCE, enforce_settings
from webhook.findings.recreation import MADE, recreations
from webhook.settings import DEFAULT_SETTINGS, MODE_KEYS, Mode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from helmchart import config_files, render, tool  # the chart's helper, one folder over

HOST_NETWORK = {"hostNetwork": True, "containers": [{"name": "c", "image": "x"}]}
PLAIN = {"containers": [{"name": "c", "image": "x"}]}


def scan_json(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["scan", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def warn_config(tmp_path: Path, extra: str = "") -> Path:
    """The config the chart renders for `mode: warn`: every knob it maps warns."""
    path = tmp_path / "warn.yaml"
    path.write_text(
        "defaultDeny: {mode: warn, allowAll: warn, allowAllSelected: warn}\n"
        "hostNetwork: {mode: warn, hostPort: warn, hostPID: warn, hostPIDPtrace: warn, "
        "hostPath: warn, otherHostPaths: warn, privileged: warn, capabilities: warn, "
        "probeHost: warn}\n" + extra
    )
    return path


# --- the two cases: a way onto the node in a fenced namespace ----------------------------


def test_a_running_host_network_pod_in_a_fenced_namespace_fails_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It scanned clean once; its re-creation is denied under enforce."""
    host_pod = {**pod("agent", "team"), "spec": HOST_NETWORK}
    folder = state(tmp_path, namespace("team"), deny_all(namespace="team"), host_pod)
    code, data = scan_json("--state", str(folder), "--config", str(warn_config(tmp_path)),
                           capsys=capsys)  # fmt: skip
    assert code == 1
    (denied,) = data["wouldDeny"]
    assert (denied["object"], denied["creates"], denied["writer"], denied["rules"]) == (
        "Pod agent",
        "Pod",
        "any user",
        ["host-network"],
    )
    assert "hostNetwork" in denied["messages"][0]
    (host,) = data["hostNetwork"]
    assert (host["mode"], host["enforceMode"], host["enforce"]) == ("warn", "enforce", "would-deny")
    assert data["unfenced"] == []


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet", "CronJob", "StatefulSet", "Job"])
def test_a_host_network_template_in_a_state_folder_fails_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    folder = state(
        tmp_path,
        namespace("team"),
        deny_all(namespace="team"),
        workload(kind, "agent", "team", HOST_NETWORK),
    )
    code, data = scan_json("--state", str(folder), capsys=capsys)
    assert code == 1
    # A Deployment's next ReplicaSet carries the template too: both are denied.
    creates = [(d["creates"], d["writer"]) for d in data["wouldDeny"]]
    expected = {
        "Deployment": [("ReplicaSet", "deployment-controller"), ("Pod", "replicaset-controller")],
        "DaemonSet": [("Pod", "daemon-set-controller")],
        "CronJob": [("Job", "cronjob-controller"), ("Pod", "job-controller")],
        "StatefulSet": [("Pod", "statefulset-controller")],
        "Job": [("Pod", "job-controller")],
    }[kind]
    assert creates == expected
    main(["scan", "--state", str(folder)])
    text = capsys.readouterr().out
    assert "ENFORCE WOULD DENY what this cluster re-creates: 1 workload\n" in text
    assert "GATE: enforce would deny" in text


def test_the_denial_names_the_pod_as_its_controller_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A StatefulSet's Pod is named by its ordinal (`db-0`, `spec.ordinals.start` first), a
    DaemonSet's is still to be generated from the DaemonSet's name (`agent-`)."""
    stateful = workload("StatefulSet", "db", "team", HOST_NETWORK)
    stateful["spec"]["ordinals"] = {"start": 3}
    folder = state(
        tmp_path,
        namespace("team"),
        deny_all(namespace="team"),
        stateful,
        workload("DaemonSet", "agent", "team", HOST_NETWORK),
    )
    _, data = scan_json("--state", str(folder), capsys=capsys)
    named = {d["object"]: d["messages"][0].split(" uses ")[0] for d in data["wouldDeny"]}
    assert named == {"StatefulSet db": 'Pod "db-3"', "DaemonSet agent": 'Pod "agent-"'}


@pytest.mark.parametrize("kind", sorted(MADE))
def test_check_and_the_gate_judge_the_same_controller_requests(kind: str) -> None:
    """One table: what check judges after a manifest's own CREATE is what the gate judges for
    the same object in a cluster, request for request."""
    obj = workload(kind, "app", "team", HOST_NETWORK)
    gate = [(r.request.user, r.request.name, r.request.object) for r in recreations(obj)]
    checked = [(r.user, r.name, r.object) for _, r in requests_for(obj)[1:]]
    assert checked == gate
    made = [obj["kind"] for _, _, obj in gate if obj is not None]
    assert made[-1:] == ["Pod"]


def test_what_nothing_re_creates_is_not_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished Pod, a completed Job, a Terminating namespace, an exempt namespace or
    controller: nothing there is re-created (or the webhook lets it through)."""
    done = workload("Job", "done", "team", HOST_NETWORK)
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    finished = {**pod("old", "team", phase="Succeeded"), "spec": HOST_NETWORK}
    folder = state(
        tmp_path,
        namespace("team"),
        deny_all(namespace="team"),
        done,
        finished,
        namespace("going", phase="Terminating"),
        workload("Deployment", "web", "going", HOST_NETWORK),
        namespace("kube-system"),
        workload("DaemonSet", "proxy", "kube-system", HOST_NETWORK),
        namespace("agents"),
        deny_all(namespace="agents"),
        workload("DaemonSet", "agent", "agents", HOST_NETWORK),
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "exemptions:\n  namespaces: [kube-system]\n"
        "  users: [system:serviceaccount:kube-system:daemon-set-controller]\n"
    )
    code, data = scan_json("--state", str(folder), "--config", str(config), capsys=capsys)
    assert data["wouldDeny"] == []
    assert code == 0
    # The host findings are still reported, each labelled advisory: enforce denies none of them.
    assert {(h["object"], h["enforce"]) for h in data["hostNetwork"]} == {
        ("Job done", "advisory"),
        ("DaemonSet agent", "advisory"),
    }
    assert main(["scan", "--state", str(folder), "--config", str(config), "--strict"]) == 1


# --- the modes: what `mode: enforce` renders, not what is configured today ----------------------


def test_the_gate_judges_a_warn_config_as_enforce_but_leaves_off_and_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = state(
        tmp_path,
        namespace("open"),
        pod("a", "open"),
        namespace("soft"),
        pod("b", "soft"),
    )
    overrides = "overrides: [{namespaces: [soft], defaultDeny: warn}]\n"
    code, data = scan_json(
        "--state", str(folder), "--config", str(warn_config(tmp_path, overrides)), capsys=capsys
    )
    assert code == 1
    assert [d["namespace"] for d in data["wouldDeny"]] == ["open"]  # soft stays warn
    assert {u["namespace"]: u["enforce"] for u in data["unfenced"]} == {
        "open": "would-deny",
        "soft": "advisory",
    }
    assert data["enforceModes"]["defaultDeny"] == "enforce"
    assert data["enforceModes"]["hostPort"] == "warn"
    off = tmp_path / "off.yaml"
    off.write_text("defaultDeny: {mode: 'off'}\n")
    assert main(["scan", "--state", str(folder), "--config", str(off)]) == 0


def test_enforce_settings_raise_to_the_chart_table_and_never_lower() -> None:
    settings = parse_settings(
        "defaultDeny: {mode: audit, allowAllSelected: enforce}\nhostNetwork: {hostPort: 'off'}\n",
        "config.yaml",
        Path(),
    )
    enforced = enforce_settings(settings).modes
    assert enforced["defaultDeny"] is Mode.ENFORCE  # audit raised
    assert enforced["allowAllSelected"] is Mode.ENFORCE  # never lowered to the chart's warn
    assert enforced["hostPort"] is Mode.OFF  # off stays off
    assert enforced["namespaceLabels"] is Mode.WARN  # not a knob the chart's mode renders
    assert set(CHART_ENFORCE) <= set(MODE_KEYS)


def _chart_modes(mode: str, tmp_path: Path) -> dict[str, Mode]:
    docs = render({"mode": mode})
    return dict(load_settings(config_files(docs, tmp_path / mode)).modes)


def test_enforce_settings_are_what_the_chart_renders_for_mode_enforce(tmp_path: Path) -> None:
    """From the chart's warn (and audit) rendering, the gate's modes are the chart's enforce
    rendering, knob for knob: the table follows charts/kubefence/templates/_helpers.tpl."""
    if tool("helm") is None:
        pytest.skip("helm not built (hack/build-control-plane.sh helm)")
    enforce = _chart_modes("enforce", tmp_path)
    for mode in ("warn", "audit"):
        configured = replace(DEFAULT_SETTINGS, modes=_chart_modes(mode, tmp_path))
        assert dict(enforce_settings(configured).modes) == enforce, mode
    assert {k for k, m in enforce.items() if m is Mode.ENFORCE} == {
        k for k, m in CHART_ENFORCE.items() if m is Mode.ENFORCE
    }


# --- advisory findings ----------------------------------------------------------------------------


def test_advisory_findings_exit_0_and_1_with_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty unfenced namespace, a policy trusting a namespace label: enforce denies nothing
    this cluster re-creates, so `scan && helm upgrade --set mode=enforce` goes ahead."""
    trusting = netpol(
        "from-monitoring",
        "app",
        types=["Ingress"],
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]}],
    )
    folder = state(
        tmp_path,
        namespace("empty"),
        namespace("app"),
        deny_all(namespace="app"),
        trusting,
        workload("Deployment", "web", "app", PLAIN),
    )
    code, data = scan_json("--state", str(folder), capsys=capsys)
    assert code == 0
    assert data["summary"]["wouldDeny"] == 0
    assert data["summary"]["advisory"] == 2
    assert [u["enforce"] for u in data["unfenced"]] == ["advisory"]
    assert [t["enforce"] for t in data["labelTrust"]] == ["advisory"]
    assert main(["scan", "--state", str(folder), "--strict"]) == 1
    text = capsys.readouterr().out
    assert "GATE: enforce would deny nothing this cluster re-creates (exit 0); 2 advisory" in text
    assert "  empty      Ingress, Egress  -               0             enforce  advisory" in text


def test_a_namespace_only_workloads_name_is_judged_as_the_live_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `--state` folder without the Namespace object: a live cluster has it, unfenced."""
    folder = state(tmp_path, workload("Deployment", "web", "shop", PLAIN))
    code, data = scan_json("--state", str(folder), capsys=capsys)
    assert code == 1
    assert [(u["namespace"], u["enforce"]) for u in data["unfenced"]] == [("shop", "would-deny")]
    fix = subprocess.run(
        [sys.executable, "-m", "webhook", "scan", "--state", str(folder), "--fix"],
        capture_output=True,
        text=True,
        check=False,
    )
    (policy,) = [d for d in yaml.safe_load_all(fix.stdout) if d]
    assert policy["metadata"]["namespace"] == "shop"


# --- --fix in a pipeline ------------------------------------------------------------------------


def _pipeline(folder: Path, consumer: str) -> subprocess.CompletedProcess[str]:
    command = f"{sys.executable} -m webhook scan --state {folder} --fix | {consumer}"
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        check=False,
    )


# What kubectl apply -f - does with the stream first: every document parses as an object.
APPLY = (
    f"{sys.executable} -c 'import sys, yaml; "
    "docs = [d for d in yaml.safe_load_all(sys.stdin) if d]; "
    'assert docs and all(d["kind"] == "NetworkPolicy" for d in docs); print(len(docs))\''
)


def test_fix_into_apply_passes_under_pipefail(tmp_path: Path) -> None:
    folder = state(tmp_path, namespace("open"), pod("a", "open"))
    assert main(["scan", "--state", str(folder)]) == 1  # the gate: enforce would deny Pod a
    done = _pipeline(folder, APPLY)
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")
    # Applied, the gate opens.
    fix = subprocess.run(
        [sys.executable, "-m", "webhook", "scan", "--state", str(folder), "--fix"],
        capture_output=True,
        text=True,
        check=True,
    )
    (folder / "fix.yaml").write_text(fix.stdout)
    assert main(["scan", "--state", str(folder)]) == 0


def test_fix_names_what_it_does_not_fix_and_still_exits_0(tmp_path: Path) -> None:
    """A host-network template and a neutralised fence have no --fix: stderr and the YAML's
    comments say so; the exit stays 0 (the gate is scan without --fix)."""
    folder = state(
        tmp_path,
        namespace("open"),
        pod("a", "open"),
        namespace("team"),
        deny_all(namespace="team"),
        workload("DaemonSet", "agent", "team", HOST_NETWORK),
        namespace("legacy"),
        deny_all(namespace="legacy"),
        netpol("allow-everything", "legacy", types=["Ingress"], ingress=[{}]),
        pod("b", "legacy"),
    )
    done = _pipeline(folder, APPLY)
    assert done.returncode == 0
    assert done.stderr == (
        "kubefence scan: --fix leaves 2 workloads that enforce would deny (host-network, "
        "audit-scope or a neutralising policy, which a new policy does not fix): see kubefence "
        "scan\n"
    )
    fix = subprocess.run(
        [sys.executable, "-m", "webhook", "scan", "--state", str(folder), "--fix"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fix.returncode == 0
    comments = [line for line in fix.stdout.splitlines() if "not fixed by --fix" in line]
    assert comments == [
        "# not fixed by --fix, enforce would deny: legacy/Pod b (default-deny)",
        "# not fixed by --fix, enforce would deny: team/DaemonSet agent (host-network)",
    ]
    assert main(["scan", "--state", str(folder)]) == 1


# --- a live cluster: a workload list scan may not read --------------------------------------------


def test_a_forbidden_workload_list_fails_closed(
    fake_cluster: tuple[Path, type[FakeApiServer]],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What a Deployment re-creates is not known when deployments cannot be listed: exit 1,
    and the gate line says why. A forbidden exposure list (advisory findings) does not fail."""
    kubeconfig, handler = fake_cluster
    fenced = ("a", "kube-system")
    handler.data["/api/v1/namespaces"] = [
        {"metadata": {"name": n}, "status": {"phase": "Active"}} for n in fenced
    ]
    handler.data["/api/v1/pods"] = []
    handler.forbidden = frozenset({"/apis/rbac.authorization.k8s.io/v1/clusterroles"})
    assert main(["scan", "--kubeconfig", str(kubeconfig)]) == 0
    capsys.readouterr()
    handler.forbidden = frozenset({"/apis/apps/v1/deployments"})
    assert main(["scan", "--kubeconfig", str(kubeconfig)]) == 1
    text = capsys.readouterr().out
    assert "GATE: not known: could not list deployments (403 Forbidden) (exit 1)" in text


def test_an_audit_gap_a_controller_meets_is_would_deny_and_one_only_users_meet_advisory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replicaset-controller's Pods are not audited: a ReplicaSet's next Pod is denied by
    audit-scope, so that entry is would-deny; the same gap for a Deployment's own UPDATE (a
    user's request, not a re-creation) is advisory."""
    (tmp_path / "audit-policy.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "  - level: None\n"
        "    users: [system:serviceaccount:kube-system:replicaset-controller]\n"
        "    resources: [{group: '', resources: [pods]}]\n"
        "  - level: None\n    resources: [{group: apps, resources: [deployments]}]\n"
        "  - level: Metadata\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text("auditScope: {mode: warn, policyFile: audit-policy.yaml}\n")
    folder = state(
        tmp_path, namespace("team"), deny_all(namespace="team"), workload("ReplicaSet", "web")
    )
    code, data = scan_json("--state", str(folder), "--config", str(config), capsys=capsys)
    assert code == 1
    assert [(d["object"], d["writer"], d["rules"]) for d in data["wouldDeny"]] == [
        ("ReplicaSet web", "replicaset-controller", ["audit-scope"])
    ]
    labels = {
        (a["resource"], a["operation"], a["writer"]): a["enforce"] for a in data["auditScope"]
    }
    assert labels == {
        ("pods", "CREATE", "replicaset-controller"): "would-deny",
        ("apps/deployments", "CREATE", "any user"): "advisory",
        ("apps/deployments", "UPDATE", "any user"): "advisory",
    }
    main(["scan", "--state", str(folder), "--config", str(config)])
    text = capsys.readouterr().out
    assert "    enforce would deny the cluster's own: replicaset-controller: pods" in text
    assert "    advisory: enforce denies these when sent; nothing this cluster re-creates" in text
