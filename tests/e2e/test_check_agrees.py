"""`kubefence check` agrees with the real API server: the fixture repository, checked, then applied
object by object to kube-apiserver with kubefence registered (issue 26 item 1).

What check says enforce would deny is exactly what the API server refuses through kubefence,
and what it passes (with or without a warning) is created. The repository is applied in the
order check judges it — Namespaces, NetworkPolicies, then the rest — under namespace names of
its own. The local control plane runs no controller manager, so only each object's own CREATE
is compared: check's findings on the Pods and Jobs controllers would create are not (the e2e
audit Policy records those, so check has none).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from controlplane import ControlPlane
from kubefence_process import RunningWebhook, kubectl

from webhook.check.manifests import parse

FIXTURE_REPO = Path(__file__).resolve().parents[1] / "fixtures" / "check-repo"
DENIED_BY_KUBEFENCE = re.compile(r'admission webhook "[^"]+" denied the request')


def renamed_repository(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The fixture repository with its namespaces renamed, so runs do not meet."""
    suffix = str(time.time_ns() % 10**8)
    names = {"shop": f"shop-{suffix}", "sandbox": f"sandbox-{suffix}"}
    target = tmp_path / "repo"
    shutil.copytree(FIXTURE_REPO, target)
    for path in target.rglob("*"):
        if path.suffix in (".yaml", ".json"):
            text = path.read_text(encoding="utf-8")
            for old, new in names.items():
                text = re.sub(rf"\b{old}\b", new, text)
            path.write_text(text, encoding="utf-8")
    return target, names


def label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return (
        f"{obj['kind']} {namespace}/{meta['name']}"
        if namespace
        else f"{obj['kind']} {meta['name']}"
    )


def test_check_denies_exactly_what_the_api_server_refuses(
    control_plane: ControlPlane, webhook: RunningWebhook, tmp_path: Path
) -> None:
    repo, names = renamed_repository(tmp_path)
    checked = subprocess.run(
        [sys.executable, "-m", "webhook", "check", "-o", "json", "--config", str(webhook.config_path), "."],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 1, checked.stderr
    report = json.loads(checked.stdout)
    would_deny = {
        f"{f['kind']} {f['namespace']}/{f['name']}"
        if f["namespace"]
        else f"{f['kind']} {f['name']}"
        for f in report["findings"]
        if f["denies"]
    }
    assert would_deny == {
        f"CronJob {names['sandbox']}/report",
        f"DaemonSet {names['shop']}/node-agent",
        f"NetworkPolicy {names['shop']}/allow-everything",
    }
    objects = [
        located.object
        for path in sorted(repo.rglob("*"))
        if path.suffix in (".yaml", ".json")
        for located in parse(path.read_text(encoding="utf-8"), str(path)).objects
    ]
    order = {"Namespace": 0, "NetworkPolicy": 1}
    refused: set[str] = set()
    for obj in sorted(objects, key=lambda o: order.get(o["kind"], 2)):
        created = kubectl(control_plane.kubeconfig_path, "create", "-f", "-", stdin=json.dumps(obj))
        if created.returncode == 0:
            continue
        assert DENIED_BY_KUBEFENCE.search(created.stderr), created.stderr  # no other refusal
        refused.add(label(obj))
    assert refused == would_deny


def test_with_kubeconfig_the_manifests_are_applied_to_the_live_cluster(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The fence lives in the cluster, the Deployment in the manifests: fenced with
    --kubeconfig, unfenced without it."""
    namespace = f"live-{time.time_ns() % 10**8}"
    fence = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    for obj in ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, fence):
        created = kubectl(control_plane.kubeconfig_path, "create", "-f", "-", stdin=json.dumps(obj))
        assert created.returncode == 0, created.stderr
    app = tmp_path / "app.yaml"
    app.write_text(
        json.dumps(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                    },
                },
            }
        ),
        encoding="utf-8",
    )

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "webhook", "check", *args, str(app)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    live = check("--kubeconfig", str(control_plane.kubeconfig_path))
    assert (live.returncode, live.stderr) == (0, "")
    assert live.stdout == "1 object judged in 1 file: no findings\n"
    alone = check()
    assert alone.returncode == 1
    assert f'namespace "{namespace}" is not fenced for Ingress and Egress' in alone.stdout
