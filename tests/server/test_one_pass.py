"""One pass per request: the server's handler analyses each NetworkPolicy object once, walks each
pod template once and evaluates the audit Policy once per verb, live confirm included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from objects import deny_all, netpol, netpol_review, pod_spec, workload_review

from webhook import subject
from webhook.auditpolicy import Policy
from webhook.cluster.view import ClusterView, StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.netpol import analyse_policy
from webhook.server import Runtime, build_app

AUDIT_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
"""


class LiveRead:
    """A confirmer whose live read shows the namespace as `facts` say."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.reads = 0

    async def confirm(
        self, namespace: str, timeout: float, *, not_before: float | None = None, caller: str = ""
    ) -> ClusterView | None:
        self.reads += 1
        return self.view


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the calls of the per-request work the subject does, and of the audit evaluator."""
    calls = {"analyse_policy": 0, "pod_template": 0, "evaluate": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(subject, "analyse_policy", counting("analyse_policy", analyse_policy))
    monkeypatch.setattr(subject, "pod_template", counting("pod_template", subject.pod_template))
    monkeypatch.setattr(Policy, "evaluate", counting("evaluate", Policy.evaluate))
    return calls


async def post(client: TestClient[Any, Any], review: dict[str, Any]) -> dict[str, Any]:
    async with client.post("/validate", json=review) as answer:
        assert answer.status == 200
        body: dict[str, Any] = await answer.json()
        return body["response"]


def runtime(cluster: ClusterView, live: LiveRead | None, tmp_path: Path) -> Runtime:
    (tmp_path / "audit.yaml").write_text(AUDIT_POLICY, encoding="utf-8")
    settings = parse_settings("auditScope: {policyFile: audit.yaml}", "config.yaml", tmp_path)
    return Runtime(settings=settings, cluster=cluster, confirmer=live)


async def test_a_network_policy_update_analyses_old_and_new_once_each(
    aiohttp_client: Callable[..., Any], counted: dict[str, int], tmp_path: Path
) -> None:
    old = deny_all(namespace="team")
    newer = deny_all("newer", namespace="team", created="2026-02-01T00:00:00Z")
    weakened = netpol(namespace="team", types=["Ingress"])
    cluster = StaticView([namespace_facts("team", [analyse_policy(old), analyse_policy(newer)])])
    live = LiveRead(cluster)
    client = await aiohttp_client(build_app(runtime(cluster, live, tmp_path)))
    counted["analyse_policy"] = 0

    answer = await post(client, netpol_review("UPDATE", new=weakened, old=old))

    # The oldest fence loses Egress: denied, and the denial is re-checked on a live read. The
    # guard, allow-all and the re-decision on the live read share one analysis of each object.
    assert answer["allowed"] is False
    assert live.reads == 1
    assert counted["analyse_policy"] == 2


async def test_an_allowed_policy_delete_is_analysed_once_and_remembered(
    aiohttp_client: Callable[..., Any], counted: dict[str, int], tmp_path: Path
) -> None:
    old = deny_all(namespace="team")
    newer = deny_all("newer", namespace="team", created="2026-02-01T00:00:00Z")
    cluster = StaticView([namespace_facts("team", [analyse_policy(old), analyse_policy(newer)])])
    live = LiveRead(cluster)
    run = runtime(cluster, live, tmp_path)
    client = await aiohttp_client(build_app(run))
    counted["analyse_policy"] = 0

    answer = await post(client, netpol_review("DELETE", old=newer))

    assert answer["allowed"] is True
    assert live.reads == 1  # a fence goes: confirmed live
    assert counted["analyse_policy"] == 1
    remembered = run.approvals.removals(cluster).namespace("team")
    assert remembered is not None
    # Remembered as gone as a fence (what it opens would still count).
    assert [p.name for p in remembered.policies if p.selects_all] == ["default-deny"]


async def test_a_workload_update_walks_each_pod_template_once_and_audits_once_per_verb(
    aiohttp_client: Callable[..., Any], counted: dict[str, int], tmp_path: Path
) -> None:
    fenced = namespace_facts("team", [analyse_policy(deny_all(namespace="team"))])
    # The cache shows no fence, the live read does: the denial is re-decided on the live read.
    live = LiveRead(StaticView([fenced]))
    client = await aiohttp_client(build_app(runtime(StaticView([]), live, tmp_path)))
    changed = pod_spec(containers=[{"name": "app", "image": "registry.example/app:2"}])

    answer = await post(
        client, workload_review("Deployment", "UPDATE", spec=changed, old_spec=pod_spec())
    )

    assert answer["allowed"] is True
    assert live.reads == 1
    assert counted["pod_template"] == 2  # object and oldObject, once each
    assert counted["evaluate"] == 2  # update and patch, not again after the live read
