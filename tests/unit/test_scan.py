"""`kubefence scan`: findings from manifests and from a (fake) API server, and `--fix` round trips."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from objects import deny_all, netpol, parse, review

from webhook.cli import main
from webhook.cluster.static import load_state, objects_of
from webhook.commands.scan import WORKLOAD_PATHS
from webhook.config import load_settings
from webhook.decide import decide
from webhook.findings.host import WORKLOAD_KINDS
from webhook.findings.judge import scan
from webhook.findings.model import ScanReport
from webhook.findings.render import fix_manifests, render_table, to_json
from webhook.netpol import Direction

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: ["system:serviceaccount:kube-system:replicaset-controller"]
    resources: [{group: "", resources: [pods]}]
  - level: None
    namespaces: [legacy]
    resources: [{group: batch, resources: [cronjobs]}]
  - level: Metadata
    verbs: [create, update, delete]
    resources: [{group: apps, resources: [deployments]}]
  - level: None
    resources: [{group: apps, resources: [deployments]}]
  - level: Metadata
"""


def namespace(name: str, phase: str = "Active") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "status": {"phase": phase},
    }


def pod(name: str, ns: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": phase},
    }


def state(tmp_path: Path, *objects: dict[str, Any]) -> Path:
    folder = tmp_path / "state"
    folder.mkdir(exist_ok=True)
    (folder / "cluster.yaml").write_text(yaml.safe_dump_all(objects))
    return folder


def cluster(tmp_path: Path) -> Path:
    """A cluster with one namespace of each kind of finding."""
    return state(
        tmp_path,
        namespace("kube-system"),
        namespace("fenced"),
        deny_all(namespace="fenced"),
        namespace("open"),
        pod("a", "open"),
        pod("b", "open"),
        pod("done", "open", phase="Succeeded"),
        namespace("legacy"),
        deny_all(namespace="legacy"),
        netpol("allow-everything", "legacy", types=["Ingress"], ingress=[{}]),
        namespace("half"),
        netpol("default-deny", "half", types=["Ingress"]),
        netpol("web-open", "half", selector={"matchLabels": {"app": "web"}}, ingress=[{}]),
        namespace("going", phase="Terminating"),
        namespace("ignored"),
    )


def config(tmp_path: Path, text: str = "", policy: bool = False) -> Path:
    path = tmp_path / "kubefence.yaml"
    if policy:
        (tmp_path / "audit-policy.yaml").write_text(AUDIT_POLICY)
        text += "auditScope: {mode: warn, policyFile: audit-policy.yaml}\n"
    path.write_text(text + "overrides: [{namespaces: [ignored], defaultDeny: 'off'}]\n")
    return path


def run_scan(folder: Path, config_path: Path | None = None) -> ScanReport:
    """As `kubefence scan --state` reads a folder."""
    view = load_state(folder)
    facts = [f for f in (view.namespace(n) for n in view.names()) if f is not None]
    workloads = objects_of(folder, WORKLOAD_KINDS)
    return scan(facts, view, load_settings(config_path), workloads=workloads)


# --- findings -----------------------------------------------------------------------------------


def test_unfenced_neutralised_and_skipped_namespaces(tmp_path: Path) -> None:
    report = run_scan(cluster(tmp_path), config(tmp_path))
    unfenced = {u.namespace: u for u in report.unfenced}
    assert set(unfenced) == {"open", "legacy", "half"}
    assert unfenced["open"].missing == (Direction.INGRESS, Direction.EGRESS)
    assert unfenced["open"].running_pods == 2  # Succeeded pods do not run
    assert unfenced["half"].missing == (Direction.EGRESS,)
    assert unfenced["legacy"].missing == (Direction.INGRESS,)
    assert unfenced["legacy"].neutralised_by == {Direction.INGRESS: ("allow-everything",)}
    assert unfenced["legacy"].fixable == ()
    assert [(p.namespace, p.policy, p.directions) for p in report.neutralising] == [
        ("legacy", "allow-everything", (Direction.INGRESS,))
    ]
    assert [(p.namespace, p.policy) for p in report.open_selected] == [("half", "web-open")]
    assert (report.exempt, report.terminating, report.off) == (
        ("kube-system",),
        ("going",),
        ("ignored",),
    )
    assert report.audit_scope == ()
    assert report.findings


def test_a_fenced_cluster_has_no_findings(tmp_path: Path) -> None:
    folder = state(tmp_path, namespace("fenced"), deny_all(namespace="fenced"))
    report = run_scan(folder)
    assert not report.findings
    assert main(["scan", "--state", str(folder)]) == 0


def test_strict_definition_wants_a_policy_without_rules(tmp_path: Path) -> None:
    folder = state(
        tmp_path,
        namespace("team"),
        netpol(
            "default-deny",
            "team",
            types=["Ingress", "Egress"],
            egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}],
        ),
    )
    assert not run_scan(folder).findings
    strict = tmp_path / "strict.yaml"
    strict.write_text("defaultDeny: {definition: strict}\n")
    (u,) = run_scan(folder, strict).unfenced
    assert u.missing == (Direction.EGRESS,)


# --- --fix --------------------------------------------------------------------------------------


def test_fix_fences_every_fixable_namespace(tmp_path: Path) -> None:
    folder = cluster(tmp_path)
    report = run_scan(folder, config(tmp_path))
    text = fix_manifests(report)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs} == {
        ("open", "kubefence-default-deny"),
        ("half", "kubefence-default-deny"),  # never `default-deny`: it exists there (Ingress only)
    }
    assert (
        "# legacy: Its Ingress default-deny is neutralised by NetworkPolicy allow-everything, "
        "which lets every peer in: narrow or delete it (a new default-deny does not help)."
    ) in text
    # Applying them leaves only what a new policy cannot fix.
    (folder / "fix.yaml").write_text(text)
    after = run_scan(folder, config(tmp_path))
    assert [u.namespace for u in after.unfenced] == ["legacy"]


def test_fix_via_the_cli_prints_only_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = cluster(tmp_path)
    assert main(["scan", "--state", str(folder), "--fix"]) == 0  # it printed every fix it has
    out = capsys.readouterr().out
    assert all(line.startswith(("#", "---", " ", "apiVersion", "kind", "metadata", "spec"))
               for line in out.splitlines() if line)  # fmt: skip
    # Without the config's override, "ignored" is scanned too.
    names = {d["metadata"]["namespace"] for d in yaml.safe_load_all(out) if d}
    assert names == {"open", "half", "ignored"}


# --- the audited scope --------------------------------------------------------------------------


def test_audit_scope_preflight_is_the_rule_itself(tmp_path: Path) -> None:
    folder = cluster(tmp_path)
    settings_path = config(tmp_path, policy=True)
    report = run_scan(folder, settings_path)
    found = {(a.resource, a.operation, a.writer): a for a in report.audit_scope}
    assert set(found) == {
        ("pods", "CREATE", "replicaset-controller"),
        ("apps/deployments", "CREATE", "any user"),
        ("apps/deployments", "UPDATE", "any user"),
        ("batch/cronjobs", "CREATE", "any user"),
        ("batch/cronjobs", "UPDATE", "any user"),
    }
    scanned = ("fenced", "half", "ignored", "legacy", "open")  # not exempt, not terminating
    assert found["pods", "CREATE", "replicaset-controller"].namespaces == scanned
    assert found["batch/cronjobs", "CREATE", "any user"].namespaces == ("legacy",)
    # The message is the webhook's own for such a request.
    deployment = found["apps/deployments", "UPDATE", "any user"]
    request = parse(
        review(
            "UPDATE",
            ("apps", "v1", "deployments"),
            "Deployment",
            namespace="fenced",
            name="example",
            obj={"metadata": {"name": "example"}, "spec": {"template": {"spec": {"x": 1}}}},
            old={"metadata": {"name": "example"}, "spec": {"template": {"spec": {}}}},
            user="kubefence:any-user",
            groups=["system:authenticated"],
        )
    )
    decision = decide(request, load_state(folder), load_settings(settings_path))
    (rule,) = [r for r in decision.results if r.rule == "audit-scope"]
    assert deployment.namespaces[0] == "fenced"
    assert rule.message == deployment.message
    assert "rules[3]" in deployment.message
    assert "patch" in deployment.message


def test_audit_scope_is_one_paragraph_per_audit_rule(tmp_path: Path) -> None:
    """Two audit rules, two namespaces: two paragraphs (there were 49), each naming its rule as
    `rules[N]`, counted from 0 as kube-apiserver counts them, and every writer it catches."""
    (tmp_path / "audit-policy.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "  - level: None\n    namespaces: [dark]\n"
        "  - level: Metadata\n    namespaces: [quiet]\n    omitStages: [ResponseComplete]\n"
        "  - level: Metadata\n"
    )
    settings_path = tmp_path / "kubefence.yaml"
    settings_path.write_text("auditScope: {policyFile: audit-policy.yaml}\n")
    folder = state(tmp_path, namespace("dark"), namespace("quiet"), namespace("lit"))
    report = run_scan(folder, settings_path)
    assert len(report.audit_scope) > 40  # every kind, operation and writer, in each namespace
    text = render_table(report)
    section = text[text.index("OUTSIDE THE AUDITED SCOPE") :].split("\n\n")[0].splitlines()
    assert section[0] == (
        f"OUTSIDE THE AUDITED SCOPE: {len(report.audit_scope)} kinds of request, by 2 audit "
        f"policy rules ({tmp_path / 'audit-policy.yaml'})"
    )
    headers = [line for line in section if line.startswith("  rules[")]
    assert headers == [
        "  rules[0] (level None; namespaces dark)",
        "  rules[1] (level Metadata; namespaces quiet; omitStages ResponseComplete)",
    ]
    assert len(section) < 20
    # Every verb a request may be recorded as: a proxy's include delete and OPTIONS ("").
    assert (
        '    create, patch, update, get, delete, "" (OPTIONS): level None, below Metadata'
    ) in section
    assert "    in 1 namespace: dark" in section
    assert any(line.startswith("    any user: CREATE, UPDATE of pods, ") for line in section)
    assert "    deployment-controller: CREATE, UPDATE of apps/replicasets" in section
    assert (
        "    fix: put a rule before rules[0] that records them at Metadata or above without "
        "omitting ResponseComplete, or narrow rules[0]"
    ) in section
    # JSON keeps one entry per kind, operation and writer, and names the rule by its index.
    entry = to_json(report)["auditScope"][0]
    assert entry["auditRules"] == [
        {
            "index": 0,
            "rule": "rules[0] (level None; namespaces dark)",
            "reason": "level None, below Metadata",
            "verbs": ["create", "patch"],
        }
    ]


def test_exempt_writers_and_namespaces_switched_off_are_left_out(tmp_path: Path) -> None:
    folder = cluster(tmp_path)
    text = (
        "exemptions:\n"
        "  namespaces: [kube-system]\n"
        "  users: [system:serviceaccount:kube-system:replicaset-controller]\n"
        "overrides: [{namespaces: [legacy], auditScope: 'off'}]\n"
    )
    (tmp_path / "audit-policy.yaml").write_text(AUDIT_POLICY)
    path = tmp_path / "exempt.yaml"
    path.write_text(text + "auditScope: {policyFile: audit-policy.yaml}\n")
    report = run_scan(folder, path)
    assert {(a.resource, a.writer) for a in report.audit_scope} == {
        ("apps/deployments", "any user")
    }
    assert all("legacy" not in a.namespaces for a in report.audit_scope)


# --- policy CRDs --------------------------------------------------------------------------------


def test_policy_crds_in_manifests_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = state(
        tmp_path,
        namespace("fenced"),
        deny_all(namespace="fenced"),
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "adminnetworkpolicies.policy.networking.k8s.io"},
            "spec": {"group": "policy.networking.k8s.io"},
        },
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "x", "namespace": "fenced"},
        },
    )
    assert main(["scan", "--state", str(folder), "--format", "json"]) == 0  # warnings only
    data = json.loads(capsys.readouterr().out)
    assert [c["group"] for c in data["policyCrds"]] == ["cilium.io", "policy.networking.k8s.io"]
    assert main(["scan", "--state", str(folder)]) == 0
    assert "the cluster serves cilium.io" in capsys.readouterr().out


def test_namespaces_without_pod_security_baseline_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def labelled(name: str, level: str | None) -> dict[str, Any]:
        ns = namespace(name)
        if level is not None:
            ns["metadata"]["labels"] = {"pod-security.kubernetes.io/enforce": level}
        return ns

    objects: list[dict[str, Any]] = [namespace("kube-system")]
    for name, level in [
        ("baseline", "baseline"),
        ("restricted", "restricted"),
        ("typo", "basline"),  # PSA enforces an invalid level as restricted
        ("privileged", "privileged"),
        ("unlabelled", None),
    ]:
        objects += [labelled(name, level), deny_all(namespace=name)]
    folder = state(tmp_path, *objects)
    assert run_scan(folder).without_pod_security == ("privileged", "unlabelled")
    assert main(["scan", "--state", str(folder)]) == 0  # a warning, not a finding
    out = capsys.readouterr().out
    assert (
        "2 namespaces without Pod Security Admission baseline enforcement (privileged, "
        "unlabelled)" in out
    )
    assert main(["scan", "--state", str(folder), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["withoutPodSecurity"] == [
        "privileged",
        "unlabelled",
    ]


def test_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = cluster(tmp_path)
    settings_path = config(tmp_path, policy=True)
    assert main(["scan", "--state", str(folder), "--config", str(settings_path)]) == 1
    text = capsys.readouterr().out
    assert "UNFENCED NAMESPACES: 3" in text
    assert "legacy     Ingress          Ingress: allow-everything" in text
    assert "OUTSIDE THE AUDITED SCOPE: 5" in text
    assert "NetworkPolicy half/web-open opens the pods it selects" in text
    data = to_json(run_scan(folder, settings_path))
    assert data["summary"] == {
        "namespaces": 7,
        "scanned": 4,
        "unfenced": 3,
        "neutralising": 1,
        "openSelected": 1,
        "nearlyOpen": 0,
        "auditScope": 5,
        "policyCrds": 0,
        "labelTrust": 0,
        "externalIPs": 0,
        "nodeProxy": 0,
        "hostNetwork": 0,
        "findings": True,
        "wouldDeny": 2,  # the two running Pods of "open"
        "advisory": 8,  # 2 unfenced, 1 neutralising, 5 audit-scope: no workload they deny
    }
    assert render_table(run_scan(folder, settings_path)) == text


# --- a live cluster (a fake API server speaking the list protocol) -------------------------------


class FakeApiServer(BaseHTTPRequestHandler):
    """Answers the LISTs scan makes, two items a page, and records what it was asked."""

    seen: ClassVar[list[tuple[str, dict[str, list[str]], str]]] = []
    data: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    groups: ClassVar[list[str]] = []
    status: ClassVar[int] = 200
    forbidden: ClassVar[frozenset[str]] = frozenset()  # paths answered 403

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        type(self).seen.append((url.path, query, self.headers.get("Accept", "")))
        if self.status != 200 or url.path in self.forbidden:
            code = 403 if url.path in self.forbidden else self.status
            self._send(code, {"kind": "Status", "message": "namespaces is forbidden"})
            return
        if url.path in ("/apis", "/apis/"):
            self._send(200, {"kind": "APIGroupList", "groups": [{"name": g} for g in self.groups]})
            return
        items = self.data.get(url.path)
        if items is None:
            self._send(404, {"kind": "Status", "message": "not found"})
            return
        start = int(query.get("continue", ["0"])[0])
        page = items[start : start + 2]
        more = str(start + 2) if start + 2 < len(items) else ""
        self._send(200, {"kind": "List", "metadata": {"continue": more}, "items": page})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[tuple[Path, type[FakeApiServer]]]:
    def item(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}

    handler = type("Handler", (FakeApiServer,), {})
    handler.seen = []
    handler.groups = ["apps", "cilium.io", "crd.projectcalico.org"]
    handler.data = {
        "/api/v1/namespaces": [item(namespace(n)) for n in ("a", "b", "c", "kube-system", "e")],
        "/apis/networking.k8s.io/v1/networkpolicies": [item(deny_all(namespace="a"))],
        "/api/v1/pods": [item(pod(f"p{i}", "b")) for i in range(3)],
        "/api/v1/services": [],
        **{path: [] for path, _, _ in WORKLOAD_PATHS},
        "/apis/rbac.authorization.k8s.io/v1/clusterroles": [],
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings": [],
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    try:
        yield kubeconfig, handler
    finally:
        server.shutdown()
        server.server_close()


def test_live_cluster_is_listed_page_by_page(
    fake_cluster: tuple[Path, type[FakeApiServer]], capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig, handler = fake_cluster
    assert main(["scan", "--kubeconfig", str(kubeconfig), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {u["namespace"]: u["runningPods"] for u in data["unfenced"]} == {"b": 3, "c": 0, "e": 0}
    assert data["skipped"]["exempt"] == ["kube-system"]
    assert [c["group"] for c in data["policyCrds"]] == ["cilium.io", "crd.projectcalico.org"]
    namespace_pages = [q for p, q, _ in handler.seen if p == "/api/v1/namespaces"]
    assert [q.get("continue") for q in namespace_pages] == [None, ["2"], ["4"]]
    assert all(q["limit"] == ["500"] for q in namespace_pages)
    pods = [(q, accept) for p, q, accept in handler.seen if p == "/api/v1/pods"]
    assert len(pods) == 2  # three pods, two a page
    for query, accept in pods:
        assert query["fieldSelector"] == ["status.phase!=Succeeded,status.phase!=Failed"]
        # whole Pods: the host-network findings read their specs
        assert "as=PartialObjectMetadataList" not in accept
    listed = {p for p, _, _ in handler.seen}
    assert all(path in listed for path, _, _ in WORKLOAD_PATHS)


def test_live_cluster_errors_exit_2(
    fake_cluster: tuple[Path, type[FakeApiServer]], capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig, handler = fake_cluster
    handler.status = 403
    assert main(["scan", "--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err
    assert "403" in err
    assert "namespaces is forbidden" in err
    assert main(["scan", "--kubeconfig", str(kubeconfig.with_name("missing"))]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_near_total_openings_and_refused_policies_are_reported(tmp_path: Path) -> None:
    nearly = netpol(
        "almost-everyone",
        namespace="nearly",
        types=["Ingress"],
        ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["1.2.3.4/32"]}}]}],
    )
    blocks = [{"ipBlock": {"cidr": f"10.{i // 256}.{i % 256}.0/24"}} for i in range(300)]
    huge = netpol("huge", namespace="big", types=["Ingress"], ingress=[{"from": blocks}])
    folder = state(
        tmp_path,
        namespace("nearly"),
        deny_all(namespace="nearly"),
        nearly,
        namespace("big"),
        deny_all(namespace="big"),
        huge,
    )
    report = run_scan(folder)
    (near,) = report.nearly_open
    assert (near.namespace, near.direction, near.policies) == (
        "nearly",
        "Ingress",
        ("almost-everyone",),
    )
    assert "1 IPv4 address" in near.left_out
    assert "open to nearly every peer for Ingress" in render_table(report)
    # A policy kubefence refused to analyse (over a limit) counts as opening its directions.
    (big,) = report.unfenced
    assert big.namespace == "big"
    assert big.neutralised_by == {Direction.INGRESS: ("huge (over a limit, not analysed)",)}
