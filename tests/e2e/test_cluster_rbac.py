"""RBAC as shipped: the built-in `edit` and `view` ClusterRoles as the controller manager's
clusterrole-aggregation controller fills them (on the API-server tier they are empty), bound in
one fenced namespace to a test user, and what that user can and cannot do to the fence.

`edit` may write NetworkPolicies, so RBAC lets the user delete the namespace's default-deny
while its Pods run: kubefence's guard is what refuses it, with its message. The user cannot touch
the webhook's registration or the namespace's labels; `view` may only read the fence.
"""

from __future__ import annotations

import pytest
from cluster import DEFAULT_DENY, FencedCluster

pytestmark = pytest.mark.cluster

NAMESPACE = "rbac-team"
EDITOR = "alice@example.com"
VIEWER = "bob@example.com"
OPEN_ALL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-everything
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress: [{}]
"""


def test_edit_and_view_against_the_fence(fenced_cluster: FencedCluster) -> None:
    c = fenced_cluster.cluster
    c.kubectl_ok("create", "namespace", NAMESPACE)
    c.kubectl_ok("apply", "-n", NAMESPACE, "-f", "-", stdin=DEFAULT_DENY)
    c.kubectl_ok("create", "rolebinding", "alice-edit", "--clusterrole=edit", f"--user={EDITOR}",
                 "-n", NAMESPACE)  # fmt: skip
    c.kubectl_ok("create", "rolebinding", "bob-view", "--clusterrole=view", f"--user={VIEWER}",
                 "-n", NAMESPACE)  # fmt: skip

    def can(user: str, verb: str, resource: str, *where: str) -> bool:
        out = c.kubectl("auth", "can-i", verb, resource, *where, as_user=user)
        return out.stdout.strip() == "yes"

    ns = ("-n", NAMESPACE)
    # The aggregated roles as the controller manager made them.
    assert can(EDITOR, "delete", "networkpolicies", *ns)
    assert can(EDITOR, "create", "deployments.apps", *ns)
    assert can(VIEWER, "get", "networkpolicies", *ns)
    assert not can(VIEWER, "delete", "networkpolicies", *ns)
    assert not can(EDITOR, "patch", f"namespace/{NAMESPACE}")
    assert not can(EDITOR, "delete", "validatingwebhookconfigurations")
    assert not can(EDITOR, "create", "rolebindings", *ns)

    # What the editor does: a workload in the fenced namespace rolls out.
    c.kubectl_ok("create", "deployment", "app", "--image=registry.example/app:1", *ns,
                 as_user=EDITOR)  # fmt: skip
    c.kubectl_ok("rollout", "status", "deployment/app", "--timeout=120s", *ns)

    # RBAC lets the editor delete the fence; kubefence's guard does not, and says why.
    out = c.kubectl("delete", "networkpolicy", "default-deny", *ns, as_user=EDITOR)
    assert out.returncode != 0
    assert 'admission webhook "validate.kubefence.io" denied the request' in out.stderr, out.stderr
    assert "default-deny" in out.stderr, out.stderr
    assert c.kubectl("get", "networkpolicy", "default-deny", *ns).returncode == 0

    # Nor may the editor neutralise it with a policy that opens every pod to every peer.
    out = c.kubectl("apply", "-f", "-", *ns, stdin=OPEN_ALL, as_user=EDITOR)
    assert out.returncode != 0
    assert 'admission webhook "validate.kubefence.io" denied the request' in out.stderr, out.stderr

    # The viewer is stopped by RBAC before any webhook.
    out = c.kubectl("delete", "networkpolicy", "default-deny", *ns, as_user=VIEWER)
    assert out.returncode != 0
    assert "Forbidden" in out.stderr, out.stderr
    assert "cannot delete" in out.stderr, out.stderr
