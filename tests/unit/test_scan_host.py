"""`kubefence scan` reports the host-network rule's findings for running Pods and workload
templates: each with its namespace, object, check, fields, message and mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from objects import deny_all, parse, workload, workload_review
from test_scan import FakeApiServer, fake_cluster, namespace, pod, state  # noqa: F401

from webhook.cli import main
from webhook.cluster.static import load_state, objects_of
from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import load_settings, parse_settings
from webhook.decide import decide
from webhook.findings.host import WORKLOAD_KINDS
from webhook.findings.judge import scan
from webhook.findings.model import ScanReport
from webhook.findings.render import render_table, to_json
from webhook.netpol import analyse_policy


def run_scan(folder: Path, config_path: Path | None = None) -> ScanReport:
    """As `kubefence scan --state` reads a folder."""
    view = load_state(folder)
    facts = [f for f in (view.namespace(n) for n in view.names()) if f is not None]
    workloads = objects_of(folder, WORKLOAD_KINDS)
    return scan(facts, view, load_settings(config_path), workloads=workloads)


def with_spec(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    pod_spec = {"containers": [{"name": "c", "image": "x"}], **spec}
    if obj["kind"] == "Pod":
        return {**obj, "spec": pod_spec}
    return workload(obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"], pod_spec)


PRIVILEGED = [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
KUBELET = [{"name": "kubelet", "hostPath": {"path": "/var/lib/kubelet"}}]
LOGS = [{"name": "logs", "hostPath": {"path": "/var/log"}}]
PROBED = [
    {
        "name": "c",
        "image": "x",
        "livenessProbe": {"httpGet": {"port": 80, "host": "169.254.169.254"}},
    }
]


def host_cluster(tmp_path: Path) -> Path:
    return state(
        tmp_path,
        namespace("kube-system"),
        with_spec(pod("kube-proxy", "kube-system"), containers=PRIVILEGED),  # exempt
        namespace("team"),
        deny_all(namespace="team"),
        with_spec(pod("debug", "team"), containers=PRIVILEGED),
        with_spec(pod("old", "team", phase="Succeeded"), containers=PRIVILEGED),  # finished
        with_spec(workload("Deployment", "agent", "team"), volumes=KUBELET),
        with_spec(workload("DaemonSet", "fluent", "team"), volumes=LOGS),
        with_spec(workload("CronJob", "probe", "team"), containers=PROBED),
        with_spec(workload("Deployment", "web", "team")),  # nothing onto the node
    )


def test_running_pods_and_templates_are_reported_as_the_webhook_judges_them(
    tmp_path: Path,
) -> None:
    data = to_json(run_scan(host_cluster(tmp_path)))
    assert data["summary"]["hostNetwork"] == 4
    assert data["summary"]["findings"] is True
    found = [(h["object"], h["check"], h["field"], h["mode"]) for h in data["hostNetwork"]]
    assert found == [
        ("Pod debug", "privileged", "spec.containers[0].securityContext.privileged", "enforce"),
        ("Deployment agent", "hostPath", "spec.template.spec.volumes[0].hostPath.path", "enforce"),
        (
            "DaemonSet fluent",
            "otherHostPaths",
            "spec.template.spec.volumes[0].hostPath.path",
            "warn",
        ),
        (
            "CronJob probe",
            "probeHost",
            "spec.jobTemplate.spec.template.spec.containers[0].livenessProbe.httpGet.host",
            "enforce",
        ),
    ]
    assert {h["namespace"] for h in data["hostNetwork"]} == {"team"}
    first = data["hostNetwork"][0]
    assert first["fields"] == [first["field"]]
    assert first["message"].startswith(
        'Pod "debug" sets spec.containers[0].securityContext.privileged: a privileged container'
    )


def test_each_finding_is_the_webhooks_own_message_on_a_create() -> None:
    """The message scan prints is the one the webhook denies the same object's CREATE with."""
    spec = {"containers": [{"name": "c", "image": "x"}], "volumes": KUBELET}
    review = workload_review("Deployment", name="agent", spec=spec)
    fenced = StaticView([namespace_facts("team", [analyse_policy(deny_all())])])
    settings = parse_settings("", "config.yaml", Path())
    decision = decide(parse(review), fenced, settings)
    facts = [namespace_facts("team", [analyse_policy(deny_all())])]
    report = scan(facts, fenced, settings, workloads=[workload("Deployment", "agent", spec=spec)])
    assert [h.message for h in report.host_network] == [decision.message]


def test_modes_and_overrides_decide_what_is_reported(tmp_path: Path) -> None:
    folder = host_cluster(tmp_path)
    config = tmp_path / "kubefence.yaml"
    config.write_text(
        "hostNetwork: {privileged: warn}\n"
        "overrides: [{namespaces: [team], otherHostPaths: 'off', probeHost: audit}]\n"
    )
    found = {(h.object, h.check): h.mode for h in run_scan(folder, config).host_network}
    assert found == {
        ("Pod debug", "privileged"): "warn",
        ("Deployment agent", "hostPath"): "enforce",
        ("CronJob probe", "probeHost"): "audit",
    }


def test_the_table_lists_them_and_the_exit_code_counts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = host_cluster(tmp_path)
    assert main(["scan", "--state", str(folder)]) == 1
    text = capsys.readouterr().out
    assert "WAYS ONTO THE NODE (host-network): 4" in text
    section = text[text.index("WAYS ONTO THE NODE") :]
    row = next(line for line in section.splitlines() if "Deployment agent" in line)
    assert row.split() == [
        "team",
        "Deployment",
        "agent",
        "hostPath",
        "enforce",
        "would",
        "deny",
        "spec.template.spec.volumes[0].hostPath.path",
    ]
    fluent = next(line for line in section.splitlines() if "DaemonSet fluent" in line)
    assert fluent.split()[3:6] == ["otherHostPaths", "warn", "advisory"]  # warn under enforce
    assert render_table(run_scan(folder)) == text
    (tmp_path / "clean").mkdir()
    clean = state(tmp_path / "clean", namespace("team"), deny_all(namespace="team"))
    assert main(["scan", "--state", str(clean)]) == 0
    assert "WAYS ONTO THE NODE (host-network): 0" in capsys.readouterr().out


def test_a_live_scan_reads_whole_pods_and_the_workload_kinds(
    fake_cluster: tuple[Path, type[FakeApiServer]],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    kubeconfig, handler = fake_cluster

    def item(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}

    handler.data["/api/v1/pods"] = [item(with_spec(pod("debug", "a"), containers=PRIVILEGED))]
    handler.data["/apis/apps/v1/daemonsets"] = [
        item(with_spec(workload("DaemonSet", "agent", "a"), volumes=KUBELET))
    ]
    handler.forbidden = frozenset({"/apis/batch/v1/cronjobs"})
    assert main(["scan", "--kubeconfig", str(kubeconfig), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [(h["namespace"], h["object"], h["check"]) for h in data["hostNetwork"]] == [
        ("a", "Pod debug", "privileged"),
        ("a", "DaemonSet agent", "hostPath"),
    ]
    assert data["unread"] == ["cronjobs (403 Forbidden)"]


def test_terminating_namespaces_are_left_out(tmp_path: Path) -> None:
    folder = state(
        tmp_path,
        namespace("going", phase="Terminating"),
        with_spec(pod("debug", "going"), containers=PRIVILEGED),
    )
    assert run_scan(folder).host_network == ()


def test_the_state_folder_is_read_for_every_workload_kind(tmp_path: Path) -> None:
    """In a namespace no Namespace object names, as the webhook judges it."""
    kinds = ["ReplicationController", "ReplicaSet", "StatefulSet", "Job"]
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / "w.yaml").write_text(
        yaml.safe_dump_all(
            [with_spec(workload(k, k.lower(), "team"), containers=PRIVILEGED) for k in kinds]
        )
    )
    assert [h.object for h in run_scan(folder).host_network] == [
        "ReplicationController replicationcontroller",
        "ReplicaSet replicaset",
        "StatefulSet statefulset",
        "Job job",
    ]


def test_the_pods_of_one_controller_are_one_row_of_the_table(tmp_path: Path) -> None:
    """A DaemonSet's Pods, one a node: one row in the table, every Pod in the JSON."""

    def agent_pod(name: str) -> dict[str, Any]:
        owned = with_spec(pod(name, "team"), volumes=KUBELET)
        owned["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": True}
        ]
        return owned

    folder = state(
        tmp_path,
        namespace("team"),
        with_spec(workload("DaemonSet", "agent", "team"), volumes=KUBELET),
        *(agent_pod(f"agent-{i}") for i in range(3)),
        with_spec(pod("alone", "team"), volumes=KUBELET),
    )
    report = run_scan(folder)
    assert [(h.object, h.owner) for h in report.host_network] == [
        ("Pod agent-0", "DaemonSet agent"),
        ("Pod agent-1", "DaemonSet agent"),
        ("Pod agent-2", "DaemonSet agent"),
        ("Pod alone", ""),
        ("DaemonSet agent", ""),
    ]
    assert to_json(report)["hostNetwork"][0]["owner"] == "DaemonSet agent"
    rows = [
        line.split()
        for line in render_table(report).splitlines()
        if line.startswith("  team ") and "hostPath" in line
    ]
    assert [row[1:-5] for row in rows] == [  # ... check, mode, "would deny", field
        ["3", "Pods", "of", "DaemonSet", "agent"],
        ["Pod", "alone"],
        ["DaemonSet", "agent"],
    ]
