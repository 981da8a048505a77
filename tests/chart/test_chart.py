"""The Helm chart, rendered by the pinned helm: lint, each certificate mode, non-default values,
the schema's refusals, and the contracts it shares with kubefence (rules, config, arguments).

What the real API server says about the rendered objects is in tests/e2e/test_chart_cluster.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from helmchart import (
    CHART,
    NAMESPACE,
    NON_DEFAULT,
    POLICY,
    RELEASE,
    SECRET_MODE,
    HelmError,
    config_files,
    container,
    helm,
    kinds,
    only,
    readme_commands,
    readme_install_as_template,
    render,
    render_text,
    values_file,
)

from webhook.cli import build_parser
from webhook.config import load_settings, parse_settings
from webhook.netpol import DIRECTIONS, Direction, analyse_policy, fence_for
from webhook.reach import peer_space
from webhook.registration import DEFAULT_RULES, rules_from_manifest
from webhook.settings import DEFAULT_EXEMPT_NAMESPACES, Mode, Settings

FULLNAME = f"{RELEASE}-kubefence"


pytestmark = pytest.mark.usefixtures("helm_required")


def settings_of(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    return load_settings(config_files(docs, tmp_path / "config"))


def webhook_entry(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (entry,) = only(docs, "ValidatingWebhookConfiguration")["webhooks"]
    return dict(entry)


# --- lint and render ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"certs": {"mode": "certManager"}},
        SECRET_MODE,
        NON_DEFAULT,
        {
            "certs": {
                "mode": "certManager",
                "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            }
        },
    ],
    ids=["generated", "cert-manager", "secret", "non-default", "cert-manager-issuer"],
)
def test_lint_strict(values: dict[str, Any], tmp_path: Path) -> None:
    path = values_file(values, tmp_path)
    out = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values", str(path))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_default_objects() -> None:
    docs = render()
    assert kinds(docs) == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingWebhookConfiguration",
        ]
    )
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding") and not doc["kind"].startswith(
            "Validating"
        ):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_protection_follows_the_servers_api() -> None:
    """auto: rendered where the API server serves v1 ValidatingAdmissionPolicy (helm template
    sees none unless told with --api-versions); true and false force it."""
    assert "ValidatingAdmissionPolicy" not in kinds(render(api_versions=()))
    assert "ValidatingAdmissionPolicy" in kinds(render())
    off = render({"webhookProtection": {"enabled": False}})
    assert "ValidatingAdmissionPolicy" not in kinds(off)
    on = render({"webhookProtection": {"enabled": True}}, api_versions=())
    assert "ValidatingAdmissionPolicyBinding" in kinds(on)


# --- the webhook configuration -------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_rules_are_the_registered_rules(values: dict[str, Any]) -> None:
    """One source: the rendered rules are webhook.registration.DEFAULT_RULES, in order."""
    assert rules_from_manifest(webhook_entry(render(values))["rules"]) == DEFAULT_RULES
    assert webhook_entry(render(values))["rules"] == [r.to_manifest() for r in DEFAULT_RULES]


def test_webhook_defaults() -> None:
    docs = render()
    entry = webhook_entry(docs)
    service = only(docs, "Service")
    assert entry["name"] == "validate.kubefence.io"
    assert entry["sideEffects"] == "None"
    assert entry["admissionReviewVersions"] == ["v1"]
    assert entry["failurePolicy"] == "Fail"
    assert entry["timeoutSeconds"] == 5
    assert entry["matchPolicy"] == "Equivalent"
    assert "matchConditions" not in entry
    assert entry["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": "/validate",
        "port": service["spec"]["ports"][0]["port"],
    }
    assert entry["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [*DEFAULT_EXEMPT_NAMESPACES, NAMESPACE],
            }
        ]
    }


def test_match_conditions() -> None:
    entry = webhook_entry(render(NON_DEFAULT))
    assert entry["failurePolicy"] == "Ignore"
    assert entry["timeoutSeconds"] == 3
    assert [c["name"] for c in entry["matchConditions"]] == [
        "break-glass",
        "spec-changed",
        "not-argo",
    ]
    assert (
        '"example:break-glass" in request.userInfo.groups'
        in entry["matchConditions"][0]["expression"]
    )


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_names_and_exclusions_are_set_once(values: dict[str, Any], tmp_path: Path) -> None:
    """The webhook name and the excluded namespaces reach the VWC and the config alike."""
    docs = render(values)
    entry = webhook_entry(docs)
    settings = settings_of(docs, tmp_path)
    assert settings.webhook_name == entry["name"]
    excluded = entry["namespaceSelector"]["matchExpressions"][0]["values"]
    assert settings.exemptions.namespaces == frozenset(excluded)
    assert NAMESPACE in excluded


# --- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [{}, {"certs": {"mode": "certManager"}}, SECRET_MODE, NON_DEFAULT, {"mode": "audit"}],
    ids=["generated", "cert-manager", "secret", "non-default", "audit"],
)
def test_config_parses(values: dict[str, Any], tmp_path: Path) -> None:
    """The rendered ConfigMap is a config kubefence accepts (unknown keys would be errors)."""
    docs = render(values)
    data = only(docs, "ConfigMap")["data"]
    parse_settings(data["config.yaml"], "configmap", Path(), lambda path: data[path.name])
    settings_of(docs, tmp_path)


def test_config_of_non_default_values(tmp_path: Path) -> None:
    settings = settings_of(render(NON_DEFAULT), tmp_path)
    assert settings.webhook_names == ("fence.example.org", "validate.kubefence.io")
    assert settings.exemptions.users == {"system:serviceaccount:ci:deployer"}
    assert settings.exemptions.groups == {"platform"}
    assert settings.audit_policy is not None
    assert settings.audit_policy_file == str(tmp_path / "config" / "audit-policy.yaml")
    assert settings.require == (Direction.INGRESS,)
    assert settings.strict
    assert settings.max_staleness == 120
    assert not settings.deny_on_stale
    assert settings.max_body_bytes == 1048576
    assert settings.mode("defaultDeny", "legacy") == Mode.WARN
    assert settings.limits.peer_space == peer_space(["multicast"])


@pytest.mark.parametrize(
    ("mode", "enforcing", "warning"),
    [
        ("enforce", Mode.ENFORCE, Mode.WARN),
        ("warn", Mode.WARN, Mode.WARN),
        ("audit", Mode.AUDIT, Mode.AUDIT),
    ],
)
def test_global_mode(mode: str, enforcing: Mode, warning: Mode, tmp_path: Path) -> None:
    settings = settings_of(render({"mode": mode, "auditPolicy": POLICY}), tmp_path)
    for key in ("defaultDeny", "allowAll", "hostNetwork", "auditScope"):
        assert settings.mode(key, "any") == enforcing, key
    # the host escapes follow the mode too
    for key in ("hostPID", "hostPIDPtrace", "hostPath", "privileged", "capabilities", "probeHost"):
        assert settings.mode(key, "any") == enforcing, key
    for key in ("allowAllSelected", "hostPort", "otherHostPaths"):
        assert settings.mode(key, "any") == warning, key


def test_explicit_config_mode_wins(tmp_path: Path) -> None:
    values = {"mode": "warn", "config": {"hostNetwork": {"mode": "enforce"}}}
    settings = settings_of(render(values), tmp_path)
    assert settings.mode("hostNetwork", "any") == Mode.ENFORCE
    assert settings.mode("defaultDeny", "any") == Mode.WARN


def test_the_host_checks_are_settable_through_config_and_overrides(tmp_path: Path) -> None:
    values = {
        "mode": "enforce",
        "config": {
            "hostNetwork": {"otherHostPaths": "enforce", "hostPaths": ["/srv/agent"]},
            "overrides": [{"namespaces": ["monitoring"], "privileged": "off", "probeHost": "warn"}],
        },
    }
    settings = settings_of(render(values), tmp_path)
    assert settings.mode("otherHostPaths", "any") == Mode.ENFORCE
    assert settings.host_paths == ("/srv/agent",)
    assert settings.mode("privileged", "monitoring") == Mode.OFF
    assert settings.mode("probeHost", "monitoring") == Mode.WARN
    assert settings.mode("privileged", "any") == Mode.ENFORCE


def test_audit_policy_as_string(tmp_path: Path) -> None:
    settings = settings_of(render({"auditPolicy": yaml.safe_dump(POLICY)}), tmp_path)
    assert settings.audit_policy is not None


@pytest.mark.parametrize(
    "values", [{}, {"certs": {"mode": "certManager"}}], ids=["generated", "cert-manager"]
)
def test_drift_section(values: dict[str, Any]) -> None:
    """drift.renderIntoConfig puts what was installed into the config: the three objects' names
    and the webhook entries exactly as rendered (without caBundle where cert-manager injects it)."""
    docs = render({**values, "drift": {"renderIntoConfig": True}})
    config = yaml.safe_load(only(docs, "ConfigMap")["data"]["config.yaml"])
    drift = config["drift"]
    vwc = only(docs, "ValidatingWebhookConfiguration")
    assert drift["webhookConfiguration"] == vwc["metadata"]["name"]
    assert drift["admissionPolicy"] == only(docs, "ValidatingAdmissionPolicy")["metadata"]["name"]
    assert drift["binding"] == only(docs, "ValidatingAdmissionPolicyBinding")["metadata"]["name"]
    assert drift["expected"] == vwc["webhooks"]
    injected = values.get("certs", {}).get("mode") == "certManager"
    assert drift["ignoreCABundle"] is injected
    assert ("caBundle" in drift["expected"][0]["clientConfig"]) is not injected
    off = render({**values, "drift": {"renderIntoConfig": False}})
    assert "drift" not in yaml.safe_load(only(off, "ConfigMap")["data"]["config.yaml"])


def test_drift_section_parses(tmp_path: Path) -> None:
    settings = settings_of(render(), tmp_path)  # rendered by default
    assert settings.drift is not None
    assert settings.drift.expected


# --- certificates --------------------------------------------------------------------------------


def test_generated_certificates() -> None:
    docs = render()
    secret = only(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert webhook_entry(docs)["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{FULLNAME}.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)
    assert b"PRIVATE KEY" in data["tls.key"]
    mounts = only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"secretName": f"{FULLNAME}-tls", "defaultMode": 0o440} in [
        m.get("secret") for m in mounts
    ]


def test_generated_certificates_are_fresh_per_install() -> None:
    """Without a cluster to look the Secret up in, every render makes a new CA (an install);
    tests/e2e/test_chart_cluster.py shows an upgrade keeping it."""
    first, second = render(), render()
    assert only(first, "Secret")["data"]["ca.crt"] != only(second, "Secret")["data"]["ca.crt"]


def test_cert_manager() -> None:
    docs = render({"certs": {"mode": "certManager"}})
    assert "Secret" not in kinds(docs)
    vwc = only(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-tls"
    }
    assert "caBundle" not in vwc["webhooks"][0]["clientConfig"]
    issuers = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Issuer"}
    assert issuers == {
        f"{FULLNAME}-selfsigned": {"selfSigned": {}},
        f"{FULLNAME}-ca": {"ca": {"secretName": f"{FULLNAME}-ca"}},
    }
    certs = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Certificate"}
    assert certs[f"{FULLNAME}-ca"]["isCA"] is True
    serving = certs[f"{FULLNAME}-tls"]
    assert serving["secretName"] == f"{FULLNAME}-tls"
    assert serving["issuerRef"]["name"] == f"{FULLNAME}-ca"
    assert f"{FULLNAME}.{NAMESPACE}.svc" in serving["dnsNames"]
    policy = only(docs, "ValidatingAdmissionPolicy")
    injector = next(v for v in policy["spec"]["variables"] if v["name"] == "injector")
    assert injector["expression"] == (
        'request.userInfo.username == "system:serviceaccount:cert-manager:cert-manager-cainjector"'
    )


def test_cert_manager_with_an_existing_issuer() -> None:
    issuer = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    docs = render({"certs": {"mode": "certManager", "certManager": {"issuerRef": issuer}}})
    assert "Issuer" not in kinds(docs)
    assert only(docs, "Certificate")["spec"]["issuerRef"] == issuer


def test_existing_secret() -> None:
    docs = render(SECRET_MODE)
    assert "Secret" not in kinds(docs)
    entry = webhook_entry(docs)
    assert entry["clientConfig"]["caBundle"] == SECRET_MODE["certs"]["secret"]["caBundle"]
    volumes = only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"secretName": "my-tls", "defaultMode": 0o440} in [v.get("secret") for v in volumes]
    assert "Secret" not in kinds(docs)


# --- the Deployment ------------------------------------------------------------------------------


def test_pod_security_restricted() -> None:
    docs = render()
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65532
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert "command" not in c  # the image's ENTRYPOINT, `kubefence serve`


def test_availability() -> None:
    docs = render()
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["priorityClassName"] == "system-cluster-critical"
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert only(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    c = container(docs)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]
    one = render({"replicaCount": 1})
    assert "PodDisruptionBudget" not in kinds(one)


def test_non_default_deployment() -> None:
    docs = render(NON_DEFAULT)
    c = container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert c["image"] == "registry.example/kubefence@sha256:" + "a" * 64
    assert "--client-ca=/etc/kubefence/client-ca/ca.crt" in c["args"]
    assert "--port=9443" in c["args"]
    assert "--workers=2" in c["args"]
    # The kubelet has no client certificate: it probes the plain-HTTP port.
    assert "--probe-port=9080" in c["args"]
    assert {"name": "probes", "containerPort": 9080, "protocol": "TCP"} in c["ports"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "probes", "scheme": "HTTP"}
    (endpoint,) = only(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"]) == ("probes", "http")
    service_ports = only(docs, "Service")["spec"]["ports"]
    assert [p["name"] for p in service_ports] == ["https", "probes"]
    assert "priorityClassName" not in pod
    assert pod["serviceAccountName"] == "fence"
    assert pod["topologySpreadConstraints"] == NON_DEFAULT["topologySpreadConstraints"]
    assert only(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom"


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_args_are_what_kubefence_serve_accepts(values: dict[str, Any]) -> None:
    """The image's ENTRYPOINT is `kubefence serve`: the chart's args must parse as its flags."""
    args = container(render(values))["args"]
    parsed = build_parser(["serve", *args]).parse_args(["serve", *args])
    assert str(parsed.config) == "/etc/kubefence/config/config.yaml"
    assert str(parsed.cert) == "/etc/kubefence/tls/tls.crt"
    assert str(parsed.key) == "/etc/kubefence/tls/tls.key"
    assert parsed.state is None  # in-cluster
    assert parsed.kubeconfig is None


def test_mounts_hold_the_files_args_name() -> None:
    docs = render(NON_DEFAULT)
    c = container(docs)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    for arg in c["args"]:
        flag, _, value = arg.partition("=")
        if flag in ("--config", "--cert", "--key", "--client-ca"):
            assert str(Path(value).parent) in mounts, arg


# --- the self-fence ------------------------------------------------------------------------------


def test_self_network_policy() -> None:
    """Isolated both ways, so kubefence's own rule finds its namespace fenced; then: ingress to
    the webhook port from anywhere, egress to the API server by port (never ipBlock), and DNS."""
    docs = render()
    policy = only(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"] == {}
    assert spec["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    assert spec["egress"] == [
        {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]},
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
    ]
    assert "ipBlock" not in str(spec)
    facts = analyse_policy(policy)
    for direction in DIRECTIONS:
        fence = fence_for([facts], direction)
        assert fence.fenced, direction
        assert not fence.neutralised, direction
    # The port it lets in is the one the Pod listens on.
    ports = container(docs)["ports"]
    assert ports == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]


def test_allow_from_admits_only_those_sources_to_the_webhook_port() -> None:
    docs = render({"webhook": {"allowFrom": ["10.0.0.0/8", "fd00::/8"]}})
    (webhook_port,) = only(docs, "NetworkPolicy")["spec"]["ingress"]
    assert webhook_port["from"] == [
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
        {"ipBlock": {"cidr": "fd00::/8"}},
    ]


def test_the_pinned_client_subject_reaches_the_arguments() -> None:
    docs = render({"clientCA": {"configMap": "api-ca", "subject": "kube-apiserver"}})
    assert "--client-subject=kube-apiserver" in container(docs)["args"]


def test_self_network_policy_values() -> None:
    docs = render(NON_DEFAULT)
    spec = only(docs, "NetworkPolicy")["spec"]
    assert spec["podSelector"] == only(docs, "Deployment")["spec"]["selector"]
    assert spec["ingress"] == [
        {"ports": [{"port": 9443, "protocol": "TCP"}]},
        {"ports": [{"port": 9080, "protocol": "TCP"}]},
    ]
    assert spec["egress"][0] == {"ports": [{"port": 6443, "protocol": "TCP"}]}
    assert len(spec["egress"][1]["ports"]) == 4
    assert "NetworkPolicy" not in kinds(render({"networkPolicy": {"enabled": False}}))


# --- RBAC ----------------------------------------------------------------------------------------


def test_rbac_rules() -> None:
    docs = render()
    granted = {
        (group, resource, verb)
        for rule in only(docs, "ClusterRole")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    read = ("get", "list", "watch")
    workloads = [
        ("", "pods"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    expected = {(group, resource, "list") for group, resource in workloads} | {
        (group, resource, verb)
        for group, resource in [
            ("", "namespaces"),
            ("networking.k8s.io", "networkpolicies"),
            ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
            ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
            ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
        ]
        for verb in read
    }
    assert granted == expected


def test_leader_election_may_write_one_lease_in_the_release_namespace_only() -> None:
    docs = render()
    role = only(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [
                f"{role['metadata']['name'].removesuffix('-leader-election')}-notifier"
            ],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = only(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    args = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--leader-election-namespace={NAMESPACE}" in args
    assert f"--leader-election-id={role['rules'][0]['resourceNames'][0]}" in args
    off = render({"leaderElection": {"enabled": False}})
    assert "Role" not in kinds(off)
    assert "RoleBinding" not in kinds(off)
    off_args = only(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-election-namespace=" in off_args  # every Pod notifies


# --- the first install ---------------------------------------------------------------------------


def test_the_first_install_warns(tmp_path: Path) -> None:
    """Default mode warn: on a cluster with workloads in unfenced namespaces, enforce would deny
    every rollout and the Pods a node drain re-creates."""
    settings = settings_of(render({"auditPolicy": POLICY}), tmp_path)
    for key in ("defaultDeny", "allowAll", "allowAllSelected", "hostNetwork", "hostPort"):
        assert settings.mode(key, "any") == Mode.WARN, key
    assert settings.mode("auditScope", "any") == Mode.WARN


def test_an_install_without_an_image_fails_naming_it() -> None:
    """No registry serves `kubefence:0.1.0`: an install without image.repository is refused by
    the schema rather than leaving a webhook whose Pods never start."""
    with pytest.raises(HelmError) as err:
        render_text(image=False)
    assert "at '/image/repository': minLength: got 0, want 1" in str(err.value)
    with pytest.raises(HelmError):
        helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE)


def test_the_readme_install_line_renders_the_image_it_builds(tmp_path: Path) -> None:
    """The README's build, kind load and install lines name one image, and the install line
    (as `helm template`) renders a Deployment of exactly that image, in warn mode."""
    (build,) = readme_commands("hack/build-image.sh")
    (save,) = readme_commands("podman")
    (load,) = readme_commands("kind")
    image = build[1]
    assert save[-1] == image
    assert load[:3] == ["kind", "load", "image-archive"]
    assert load[3] == save[save.index("-o") + 1]
    docs = [d for d in yaml.safe_load_all(helm(*readme_install_as_template())) if d]
    assert container(docs)["image"] == image
    assert container(docs)["imagePullPolicy"] == "IfNotPresent"  # the loaded image is used
    settings = settings_of(docs, tmp_path)
    assert settings.mode("defaultDeny", "any") == Mode.WARN


# --- the schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "strict"}, "at '/mode': value must be one of 'enforce', 'warn', 'audit'"),
        ({"webhook": {"name": "kubefence.io"}}, "at '/webhook/name'"),
        (
            {"webhook": {"timeoutSeconds": 60}},
            "at '/webhook/timeoutSeconds': maximum: got 60, want 30",
        ),
        ({"webhook": {"failurePolicy": "fail"}}, "at '/webhook/failurePolicy'"),
        (
            {"webhook": {"excludedNamespaces": ["Kube_System"]}},
            "at '/webhook/excludedNamespaces/0'",
        ),
        ({"certs": {"mode": "vault"}}, "at '/certs/mode': value must be one of"),
        ({"certs": {"mode": "secret"}}, "at '/certs/secret/name': minLength"),
        (
            {"config": {"webhookName": "a.b.c"}},
            "at '/config': additional properties 'webhookName' not allowed",
        ),
        (
            {"config": {"auditScope": {"policyFile": "x"}}},
            "additional properties 'policyFile' not allowed",
        ),
        ({"config": {"defaultDeny": {"mode": "block"}}}, "at '/config/defaultDeny/mode'"),
        (
            {"config": {"defaultDeny": {"peerRanges": ["anycast"]}}},
            "at '/config/defaultDeny/peerRanges/0'",
        ),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"containerPort": 443}, "at '/containerPort': minimum: got 443"),
        ({"webhookProtection": {"enabled": "yes"}}, "at '/webhookProtection/enabled'"),
        ({"networkPolicy": {"apiServerPorts": []}}, "at '/networkPolicy/apiServerPorts'"),
        ({"auditPolicy": {"kind": "Policy"}}, "at '/auditPolicy'"),
    ],
)
def test_schema_refuses(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as err:
        render_text(values)
    assert "values don't meet the specifications of the schema" in str(err.value)
    assert message in str(err.value)


def test_the_chart_testing_values_file_lints_plain() -> None:
    """`helm lint charts/kubefence --values charts/kubefence/ci/default-values.yaml`, as
    chart-testing runs it, passes without any other value."""
    ci_values = CHART / "ci" / "default-values.yaml"
    out = helm("lint", "--strict", str(CHART), "--values", str(ci_values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
