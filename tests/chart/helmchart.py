"""The kubefence chart rendered by the pinned helm: one helper for the chart, e2e and image tests.

helm and kubectl are looked up in ``${KUBEFENCE_BIN:-~/.cache/kubefence/bin}`` (built by
hack/build-control-plane.sh), then on PATH. Plain module, no pytest.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubefence"
README = REPO / "README.md"
STAND_IN_CRDS = Path(__file__).with_name("crds") / "stand-in-crds.yaml"
RELEASE = "kf"
NAMESPACE = "kubefence-system"
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"

# The one value the chart requires: an image the cluster can pull (no registry serves the chart's
# name alone). Every rendering here gets it unless it says otherwise; a test's own image wins.
IMAGE = {"repository": "localhost/kubefence"}

# Values the chart and e2e tests share.
POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "namespaces": ["unaudited"]}, {"level": "Metadata"}],
}
SECRET_MODE = {
    "certs": {
        "mode": "secret",
        "secret": {"name": "my-tls", "caBundle": base64.b64encode(b"not a real CA").decode()},
    }
}
# Every value away from its default at once (the certificate modes are covered on their own).
NON_DEFAULT: dict[str, Any] = {
    "mode": "enforce",
    "replicaCount": 3,
    "image": {"repository": "registry.example/kubefence", "digest": "sha256:" + "a" * 64},
    "webhook": {
        "name": "fence.example.org",
        "previousNames": ["validate.kubefence.io"],
        "failurePolicy": "Ignore",
        "timeoutSeconds": 3,
        "excludedNamespaces": ["kube-system", "monitoring"],
        "breakGlassGroup": "example:break-glass",
        "skipUnchangedUpdates": True,
        "matchConditions": [
            {"name": "not-argo", "expression": "request.userInfo.username != 'argo'"}
        ],
    },
    "exemptions": {"users": ["system:serviceaccount:ci:deployer"], "groups": ["platform"]},
    "auditPolicy": POLICY,
    "config": {
        "defaultDeny": {
            "require": ["Ingress"],
            "definition": "strict",
            "peerRanges": ["multicast"],
        },
        "auditScope": {"minLevel": "Request"},
        "overrides": [{"namespaces": ["legacy"], "defaultDeny": "warn"}],
        "cache": {"maxStaleness": "2m", "onStale": "allow"},
        "server": {"maxBodyBytes": 1048576},
    },
    "clientCA": {"configMap": "apiserver-client-ca"},
    "containerPort": 9443,
    "probePort": 9080,
    "workers": 2,
    "webhookProtection": {"enabled": False},
    "networkPolicy": {"scope": "pods", "apiServerPorts": [6443], "dnsPorts": [53, 5353]},
    "serviceAccount": {"name": "fence", "annotations": {"example/role": "x"}},
    "priorityClassName": "",
    "topologySpreadConstraints": [
        {
            "maxSkew": 2,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kubefence"}},
        }
    ],
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
}


def _bin_dir() -> Path:
    env = os.environ.get("KUBEFENCE_BIN")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kubefence" / "bin"


def tool(name: str) -> Path | None:
    """The pinned binary from the cache folder, else the one on PATH, else None."""
    cached = _bin_dir() / name
    if os.access(cached, os.X_OK):
        return cached
    found = shutil.which(name)
    return Path(found) if found else None


class HelmError(RuntimeError):
    """helm exited non-zero; the message is its stderr."""


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> str:
    """Run helm; return stdout. Without a kubeconfig, helm sees no cluster."""
    binary = tool("helm")
    if binary is None:
        raise FileNotFoundError("helm not found: run hack/build-control-plane.sh helm")
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HELM_KUBECONTEXT")}
    with tempfile.TemporaryDirectory(prefix="kubefence-helm-") as home:
        # A private helm home: no user repositories, plugins or cache leak in.
        env.update(
            HELM_CACHE_HOME=f"{home}/cache",
            HELM_CONFIG_HOME=f"{home}/config",
            HELM_DATA_HOME=f"{home}/data",
        )
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        else:
            env["KUBECONFIG"] = f"{home}/no-cluster"
        proc = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, check=False
        )
    if check and proc.returncode != 0:
        raise HelmError(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def values_file(values: Mapping[str, Any], directory: Path, *, image: bool = True) -> Path:
    """The values as a file; with `image`, over the required IMAGE (the values' own image wins)."""
    merged = dict(values)
    if image:
        merged["image"] = {**IMAGE, **(values.get("image") or {})}
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(merged), encoding="utf-8")
    return path


def render_text(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    api_versions: Iterable[str] = (VAP_API,),
    image: bool = True,
) -> str:
    """`helm template` of the chart with these values (as a values file), as YAML text."""
    with tempfile.TemporaryDirectory(prefix="kubefence-values-") as tmp:
        args = ["template", release, str(CHART), "--namespace", namespace]
        args += ["--values", str(values_file(values or {}, Path(tmp), image=image))]
        for api in api_versions:
            args += ["--api-versions", api]
        return helm(*args)


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    api_versions: Iterable[str] = (VAP_API,),
) -> list[dict[str, Any]]:
    """The rendered objects."""
    text = render_text(values, release=release, namespace=namespace, api_versions=api_versions)
    return [d for d in yaml.safe_load_all(text) if d]


def only(docs: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of a kind."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return dict(found[0])


def kinds(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The kubefence container of the Deployment."""
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def config_files(docs: Sequence[Mapping[str, Any]], directory: Path) -> Path:
    """Write the ConfigMap's files into a folder as the Pod sees them; return config.yaml's path."""
    data = only(docs, "ConfigMap")["data"]
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in data.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory / "config.yaml"


def to_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True)


def readme_commands(program: str) -> list[list[str]]:
    """The README's indented command lines that run `program`, continuations joined, split as a
    shell splits them (the install line is tested as a user would paste it)."""
    commands: list[list[str]] = []
    pending = ""
    for line in README.read_text(encoding="utf-8").splitlines():
        if not line.startswith("    ") and not pending:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        pending = ""
        if text.split(None, 1)[:1] == [program]:
            commands.append(shlex.split(text, comments=True))
    return commands


def readme_install_as_template() -> list[str]:
    """The README's `helm install` as `helm template` arguments, the chart path made absolute."""
    (install,) = [c for c in readme_commands("helm") if c[1] == "install"]
    args = ["template", *install[2:]]
    return [str(CHART) if a == "charts/kubefence" else a for a in args]
