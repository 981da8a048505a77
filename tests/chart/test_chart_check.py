"""`kubefence check` on the chart's own rendering, as a user pipes it: `helm template
charts/kubefence | kubefence check -` (issue 26 item 1).

The chart fences its own namespace (its NetworkPolicy, scope `namespace` by default), so its
rendering checks clean even without its config; with its config the namespace is exempt
(kubefence must start before it can judge anything there). With `networkPolicy.scope: pods` the
namespace is not fenced, which check says, and which the chart's config explains by exempting it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmchart import NAMESPACE, NON_DEFAULT, RELEASE, config_files, render_text

DEPLOYMENT = f"Deployment {NAMESPACE}/{RELEASE}-kubefence"
POLICY = f"NetworkPolicy {NAMESPACE}/{RELEASE}-kubefence"


pytestmark = pytest.mark.usefixtures("helm_required")


def check(rendered: str, *args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", "check", "-o", "json", *args, "-"],
        input=rendered,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_the_chart_s_rendering_checks_clean_without_its_config() -> None:
    code, report = check(render_text())
    assert (code, report["findings"], report["exempt"]) == (0, [], [])
    assert report["objects"] == 2  # its Deployment and its NetworkPolicy, both judged
    assert "ValidatingWebhookConfiguration" in report["ignored"]


def test_with_its_own_config_the_chart_s_namespace_is_exempt(tmp_path: Path) -> None:
    rendered = render_text()
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    config = config_files(docs, tmp_path / "config")
    code, report = check(rendered, "--config", str(config))
    assert (code, report["findings"]) == (0, [])
    assert {e["object"] for e in report["exempt"]} == {DEPLOYMENT, POLICY}


def test_a_pods_scoped_policy_leaves_the_namespace_unfenced_which_its_config_exempts(
    tmp_path: Path,
) -> None:
    rendered = render_text(NON_DEFAULT)  # networkPolicy.scope: pods
    code, report = check(rendered)
    assert code == 1
    ((kind, rule, template),) = {(f["kind"], f["rule"], f["template"]) for f in report["findings"]}
    assert (kind, rule, template) == (
        "Deployment",
        "default-deny",
        "kubefence/templates/deployment.yaml",
    )
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    code, report = check(rendered, "--config", str(config_files(docs, tmp_path / "config")))
    assert (code, report["findings"]) == (0, [])
