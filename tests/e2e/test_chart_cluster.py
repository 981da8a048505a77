"""The Helm chart against a real kube-apiserver: every rendered object accepted (server-side dry
run, each certificate mode and non-default values), a real `helm install` (objects, RBAC as the
ServiceAccount, the webhook routed to the Service, break-glass), an upgrade keeping the generated
CA, the ValidatingAdmissionPolicy guarding the webhook configuration, and a clean uninstall.

No kubelet runs on the local control plane: kubefence's Pods never start, so the API server's
calls to the webhook fail; that failure names the URL it called, which is what is checked.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, ExternalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from helmchart import (
    CHART,
    NON_DEFAULT,
    SECRET_MODE,
    STAND_IN_CRDS,
    VAP_API,
    helm,
    readme_install_as_template,
    render_text,
    tool,
    values_file,
)

Cluster = ControlPlane | ExternalCluster
CAINJECTOR = "system:serviceaccount:cert-manager:cert-manager-cainjector"
CAINJECTOR_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:cert-manager"]
OPERATORS = "kubefence:operators"
BREAK_GLASS = "kubefence:break-glass"


# Created before any release: once a webhook configuration exists, the API server calls a webhook
# that cannot answer (no kubelet, no Pods) and refuses what it would be asked about, namespaces too.
DRY_RUN_NAMESPACE = "kf-chart-dry"
NAMESPACES = (DRY_RUN_NAMESPACE, "kf-chart-e2e", "kf-chart-apps", "kf-chart-cm", "kubefence-system")


@pytest.fixture(scope="module")
def cluster(control_plane: Cluster) -> Cluster:
    """The local control plane: these tests install releases, CRDs and cluster roles, which a
    user's cluster (KUBEFENCE_E2E_KUBECONFIG, where the kind workflow installs the chart itself)
    should not get."""
    if not control_plane.local:
        pytest.skip("installs test releases; runs against the local control plane only")
    for name in ("helm", "kubectl"):
        if tool(name) is None:
            pytest.fail(f"{name} not found: run hack/build-control-plane.sh")
    for namespace in NAMESPACES:
        ensure_namespace(control_plane, namespace)
    apps = ("-n", "kf-chart-apps")
    if kubectl(control_plane, *apps, "get", "deployment", "web", check=False).returncode != 0:
        kubectl(control_plane, *apps, "create", "deployment", "web", "--image=nginx:1.27")
    return control_plane


def kubectl(
    cluster: Cluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = tool("kubectl")
    assert binary is not None
    proc = subprocess.run(
        [str(binary), "--kubeconfig", str(cluster.kubeconfig_path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def get(cluster: Cluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl(cluster, "get", *args, "-o", "json").stdout))


def ensure_namespace(cluster: Cluster, name: str) -> None:
    if kubectl(cluster, "get", "namespace", name, check=False).returncode != 0:
        kubectl(cluster, "create", "namespace", name)


@pytest.fixture(scope="module")
def stand_in_crds(cluster: Cluster) -> Cluster:
    """Issuer, Certificate and ServiceMonitor served (schema-less), so their objects apply."""
    kubectl(cluster, "apply", "-f", str(STAND_IN_CRDS))
    kubectl(
        cluster, "wait", "--for=condition=established", "--timeout=60s", "-f", str(STAND_IN_CRDS)
    )
    return cluster


@dataclass
class Release:
    cluster: Cluster
    name: str
    namespace: str
    values: dict[str, Any]
    tmp: Path
    installed: bool = field(default=False)

    def helm(self, *args: str, check: bool = True) -> str:
        return helm(*args, kubeconfig=self.cluster.kubeconfig_path, check=check)

    def install(self) -> None:
        path = values_file(self.values, self.tmp)
        self.helm(
            "install", self.name, str(CHART), "--namespace", self.namespace, "--values", str(path)
        )
        self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            self.installed = False
            self.helm("uninstall", self.name, "--namespace", self.namespace)

    @property
    def fullname(self) -> str:
        return f"{self.name}-kubefence"

    def manifest(self) -> list[dict[str, Any]]:
        text = self.helm("get", "manifest", self.name, "--namespace", self.namespace)
        return [d for d in yaml.safe_load_all(text) if d]


def wait_protected(cluster: Cluster, vwc: str) -> None:
    """Until the policy denies a change to the webhooks (dry run: nothing changes)."""
    deadline = time.monotonic() + 30
    while True:
        proc = patch(cluster, vwc, [replace("/webhooks/0/timeoutSeconds", 7)], check=False)
        if proc.returncode != 0 and "ValidatingAdmissionPolicy" in proc.stderr:
            return
        assert time.monotonic() < deadline, f"policy not in force: {proc.stderr or proc.stdout}"
        time.sleep(0.2)


def replace(path: str, value: object) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}


def patch(
    cluster: Cluster,
    vwc: str,
    ops: list[dict[str, Any]],
    *identity: str,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """A JSON patch of the webhook configuration as some identity, server-side dry run."""
    return kubectl(
        cluster,
        *identity,
        "patch",
        "validatingwebhookconfiguration",
        vwc,
        "--type=json",
        "--dry-run=server",
        "-p",
        json.dumps(ops),
        check=check,
    )


def as_(user: str, *groups: str) -> tuple[str, ...]:
    return (f"--as={user}", *(f"--as-group={g}" for g in groups))


# --- every rendered object is accepted ----------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [{}, {"certs": {"mode": "certManager"}}, SECRET_MODE, NON_DEFAULT, {"mode": "audit"}],
    ids=["generated", "cert-manager", "secret", "non-default", "audit"],
)
def test_server_side_dry_run(values: dict[str, Any], stand_in_crds: Cluster) -> None:
    cluster = stand_in_crds
    text = render_text(values, release=f"dry{uuid.uuid4().hex[:6]}", namespace=DRY_RUN_NAMESPACE)
    proc = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=text, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len([d for d in yaml.safe_load_all(text) if d])
    assert all(line.endswith("(server dry run)") for line in lines), proc.stdout


def test_the_readme_install_line_is_accepted(cluster: Cluster) -> None:
    """The README's `helm install`, rendered as helm would for this API server (it serves v1
    ValidatingAdmissionPolicy), is accepted object by object: nothing a newcomer pastes fails."""
    text = helm(*readme_install_as_template(), "--api-versions", VAP_API)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert {d["metadata"].get("namespace") for d in docs} == {"kubefence-system", None}
    proc = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=text, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(docs)
    assert all(line.endswith("(server dry run)") for line in lines), proc.stdout


# --- a real install ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    values = {
        "webhook": {"breakGlassGroup": BREAK_GLASS, "skipUnchangedUpdates": True},
        "webhookProtection": {"allowedGroups": [OPERATORS]},
    }
    rel = Release(cluster, "kfe2e", "kf-chart-e2e", values, tmp_path_factory.mktemp("release"))
    rel.install()
    try:
        yield rel
    finally:
        rel.uninstall()


def test_objects_exist(release: Release) -> None:
    manifest = release.manifest()
    assert {d["kind"] for d in manifest} >= {
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for doc in manifest:
        ns = doc["metadata"].get("namespace")
        args = ["-n", ns] if ns else []
        kind = (
            f"{doc['kind']}.{doc['apiVersion'].split('/')[0]}"
            if "/" in doc["apiVersion"]
            else doc["kind"]
        )
        live = get(release.cluster, *args, kind, doc["metadata"]["name"])
        assert live["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name


def test_notes_print_the_preflight(release: Release) -> None:
    notes = release.helm("get", "notes", release.name, "--namespace", release.namespace)
    assert f"rollout status deployment/{release.fullname}" in notes
    assert "kubefence scan --config config.yaml" in notes
    # The first install warns, and the notes lead to enforce once the scan is clean.
    assert "mode warn" in notes
    assert "4. Enforce once the scan is clean. Mode is warn: nothing is denied yet" in notes
    assert (
        f"helm upgrade {release.name} charts/kubefence -n {release.namespace} --reuse-values "
        "--set mode=enforce"
    ) in notes
    assert f"members of {BREAK_GLASS} skip the webhook" in notes
    assert f"may be changed only by: {OPERATORS}" in notes


def test_webhook_points_at_the_service(release: Release) -> None:
    cluster, ns = release.cluster, release.namespace
    vwc = get(cluster, "validatingwebhookconfiguration", release.fullname)
    (entry,) = vwc["webhooks"]
    service = get(cluster, "-n", ns, "service", release.fullname)
    deployment = get(cluster, "-n", ns, "deployment", release.fullname)
    secret = get(cluster, "-n", ns, "secret", f"{release.fullname}-tls")
    ref = entry["clientConfig"]["service"]
    assert (ref["name"], ref["namespace"], ref["path"]) == (release.fullname, ns, "/validate")
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (ref["port"], "https")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["containers"][0]["ports"][0]["name"] == "https"
    assert entry["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    # The API server calls exactly that Service (and fails: no Pod answers here).
    proc = kubectl(cluster, "create", "namespace", "kf-routed", "--dry-run=server", check=False)
    assert proc.returncode != 0
    assert 'failed calling webhook "validate.kubefence.io"' in proc.stderr
    assert f"https://{release.fullname}.{ns}.svc:443/validate" in proc.stderr


def test_excluded_namespaces_are_not_sent(release: Release) -> None:
    """The release namespace is excluded by kubernetes.io/metadata.name: no call, no failure."""
    proc = kubectl(
        release.cluster,
        "-n",
        release.namespace,
        "create",
        "deployment",
        "probe",
        "--image=nginx:1.27",
        "--dry-run=server",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_break_glass_skips_the_webhook(release: Release) -> None:
    cluster = release.cluster
    admin = as_("kubefence-admin", "system:masters")
    plain = kubectl(
        cluster, *admin, "create", "namespace", "kf-bg", "--dry-run=server", check=False
    )
    assert "failed calling webhook" in plain.stderr
    glass = as_("kubefence-admin", "system:masters", BREAK_GLASS)
    proc = kubectl(cluster, *glass, "create", "namespace", "kf-bg", "--dry-run=server", check=False)
    assert proc.returncode == 0, proc.stderr


def test_unchanged_spec_updates_skip_the_webhook(release: Release) -> None:
    cluster = release.cluster
    label = kubectl(
        cluster,
        "-n",
        "kf-chart-apps",
        "label",
        "deployment",
        "web",
        "x=y",
        "--dry-run=server",
        check=False,
    )
    assert label.returncode == 0, label.stderr
    image = kubectl(
        cluster,
        "-n",
        "kf-chart-apps",
        "set",
        "image",
        "deployment/web",
        "nginx=nginx:1.28",
        "--dry-run=server",
        check=False,
    )
    assert "failed calling webhook" in image.stderr


def can_i_list(cluster: Cluster, user: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs of `kubectl auth can-i --list` for resources (not URLs)."""
    out = kubectl(cluster, "auth", "can-i", "--list", f"--as={user}").stdout
    pairs = set()
    for line in out.splitlines()[1:]:
        if not line or line[0] == " ":
            continue  # non-resource URLs
        resource, _urls, _names, verbs = line.split(None, 3)
        for verb in verbs.strip("[]").split():
            pairs.add((resource, verb))
    return pairs


def test_rbac_is_exactly_the_list(release: Release) -> None:
    cluster, ns = release.cluster, release.namespace
    sa = f"system:serviceaccount:{ns}:{release.fullname}"
    granted = can_i_list(cluster, sa) - can_i_list(cluster, f"system:serviceaccount:{ns}:nobody")
    read = ("get", "list", "watch")
    # `fence.lost` names the workloads left in the namespace: list, nothing else, on each kind.
    workloads = {
        (resource, "list")
        for resource in (
            "replicationcontrollers",
            "deployments.apps",
            "replicasets.apps",
            "statefulsets.apps",
            "daemonsets.apps",
            "jobs.batch",
            "cronjobs.batch",
        )
    }
    assert granted == {("pods", "list")} | workloads | {
        (resource, verb)
        for resource in (
            "namespaces",
            "networkpolicies.networking.k8s.io",
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
            "validatingadmissionpolicies.admissionregistration.k8s.io",
            "validatingadmissionpolicybindings.admissionregistration.k8s.io",
        )
        for verb in read
    }
    # The notifier Lease: its own namespace only, that one Lease only (create cannot be named).
    lease = f"leases.coordination.k8s.io/{release.fullname}-notifier"
    for verb, resource, namespace, allowed in [
        ("update", lease, ns, True),
        ("get", lease, ns, True),
        ("create", "leases.coordination.k8s.io", ns, True),
        ("update", "leases.coordination.k8s.io/other", ns, False),
        ("update", lease, "default", False),
        ("create", "leases.coordination.k8s.io", "default", False),
    ]:
        proc = kubectl(
            cluster, "auth", "can-i", verb, resource, f"--as={sa}", "-n", namespace, check=False
        )
        assert (proc.stdout.strip() == "yes") is allowed, (verb, resource, namespace, proc.stdout)
    for verb, resource, allowed in [
        ("list", "pods", True),
        ("watch", "networkpolicies.networking.k8s.io", True),
        ("get", "pods", False),
        ("watch", "pods", False),
        ("get", "secrets", False),
        ("create", "networkpolicies.networking.k8s.io", False),
        ("update", "validatingwebhookconfigurations.admissionregistration.k8s.io", False),
        ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io", False),
    ]:
        proc = kubectl(cluster, "auth", "can-i", verb, resource, f"--as={sa}", "-A", check=False)
        assert (proc.stdout.strip() == "yes") is allowed, (verb, resource, proc.stdout)


def test_upgrade_keeps_the_generated_ca(release: Release) -> None:
    cluster, ns = release.cluster, release.namespace
    before = get(cluster, "-n", ns, "secret", f"{release.fullname}-tls")["data"]
    release.helm(
        "upgrade",
        release.name,
        str(CHART),
        "--namespace",
        ns,
        "--reuse-values",
        "--set",
        "replicaCount=3",
    )
    after = get(cluster, "-n", ns, "secret", f"{release.fullname}-tls")["data"]
    assert after == before
    vwc = get(cluster, "validatingwebhookconfiguration", release.fullname)
    assert vwc["webhooks"][0]["clientConfig"]["caBundle"] == before["ca.crt"]
    assert get(cluster, "-n", ns, "deployment", release.fullname)["spec"]["replicas"] == 3


def test_protection_of_the_webhook_configuration(release: Release) -> None:
    cluster, vwc = release.cluster, release.fullname
    wait_protected(cluster, vwc)
    denied = patch(cluster, vwc, [replace("/webhooks/0/failurePolicy", "Ignore")], check=False)
    assert (
        "kubefence-admin may not change the webhooks of the webhook configuration" in denied.stderr
    )
    delete = kubectl(
        cluster, "delete", "validatingwebhookconfiguration", vwc, "--dry-run=server", check=False
    )
    assert "kubefence-admin may not delete the webhook configuration" in delete.stderr
    # Metadata is not the fence: a label (a chart version bump) goes through.
    label = kubectl(
        cluster,
        "label",
        "validatingwebhookconfiguration",
        vwc,
        "x=y",
        "--dry-run=server",
        check=False,
    )
    assert label.returncode == 0, label.stderr
    # A listed operator may change the webhooks.
    kubectl(
        cluster,
        "create",
        "clusterrole",
        "kf-e2e-vwc-editor",
        "--verb=get,list,update,patch,delete",
        "--resource=validatingwebhookconfigurations.admissionregistration.k8s.io",
        check=False,
    )
    kubectl(
        cluster,
        "create",
        "clusterrolebinding",
        "kf-e2e-vwc-editor",
        "--clusterrole=kf-e2e-vwc-editor",
        f"--group={OPERATORS}",
        "--group=platform-admins",
        check=False,
    )
    operator = as_("olga", OPERATORS)
    ok = patch(cluster, vwc, [replace("/webhooks/0/timeoutSeconds", 7)], *operator, check=False)
    assert ok.returncode == 0, ok.stderr
    # An admin outside the list may not, whatever RBAC grants it.
    outsider = as_("carol", "platform-admins")
    no = patch(cluster, vwc, [replace("/webhooks/0/timeoutSeconds", 7)], *outsider, check=False)
    assert "carol may not change the webhooks" in no.stderr


# --- cert-manager mode: the cainjector exception -------------------------------------------------


@pytest.fixture(scope="module")
def cert_manager_release(
    stand_in_crds: Cluster, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    # One kubefence at a time: each would be asked about the other's objects, and fail here.
    release.uninstall()
    cluster = stand_in_crds
    values = {"certs": {"mode": "certManager"}, "webhookProtection": {"allowedGroups": [OPERATORS]}}
    rel = Release(cluster, "kfcm", "kf-chart-cm", values, tmp_path_factory.mktemp("cm"))
    rel.install()
    # What cert-manager's own chart grants its cainjector on webhook configurations.
    kubectl(
        cluster,
        "create",
        "clusterrole",
        "kf-e2e-cainjector",
        "--verb=get,list,watch,update,patch",
        "--resource=validatingwebhookconfigurations.admissionregistration.k8s.io",
        check=False,
    )
    kubectl(
        cluster,
        "create",
        "clusterrolebinding",
        "kf-e2e-cainjector",
        "--clusterrole=kf-e2e-cainjector",
        "--serviceaccount=cert-manager:cert-manager-cainjector",
        check=False,
    )
    try:
        yield rel
    finally:
        rel.uninstall()


def test_cainjector_may_inject_the_ca_bundle_only(cert_manager_release: Release) -> None:
    cluster, vwc = cert_manager_release.cluster, cert_manager_release.fullname
    wait_protected(cluster, vwc)
    injector = as_(CAINJECTOR, *CAINJECTOR_GROUPS)
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    add = {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}
    ok = patch(cluster, vwc, [add], *injector, check=False)
    assert ok.returncode == 0, ok.stderr
    rules = patch(
        cluster,
        vwc,
        [add, replace("/webhooks/0/rules/0/operations", ["CREATE"])],
        *injector,
        check=False,
    )
    assert "may not change the webhooks" in rules.stderr
    assert "the cainjector may change clientConfig.caBundle only" in rules.stderr
    steer = kubectl(
        cluster,
        *injector,
        "annotate",
        "validatingwebhookconfiguration",
        vwc,
        "cert-manager.io/inject-ca-from=elsewhere/ca",
        "--overwrite",
        "--dry-run=server",
        check=False,
    )
    assert "may not change the CA injection annotations" in steer.stderr
    admin = patch(cluster, vwc, [add], check=False)
    assert "kubefence-admin may not change the webhooks" in admin.stderr


def test_uninstall_removes_the_configuration(cert_manager_release: Release) -> None:
    """The policy stands aside once the Service is gone (its parameter), so an uninstall, which
    deletes the Service first, can delete the protected configuration."""
    cluster, vwc = cert_manager_release.cluster, cert_manager_release.fullname
    wait_protected(cluster, vwc)
    cert_manager_release.uninstall()
    for kind in (
        "validatingwebhookconfiguration",
        "validatingadmissionpolicy",
        "validatingadmissionpolicybinding",
    ):
        name = vwc if kind.startswith("validatingwebhook") else f"{vwc}-protect-webhook"
        proc = kubectl(cluster, "get", kind, name, check=False)
        assert "NotFound" in proc.stderr, (kind, proc.stdout)
