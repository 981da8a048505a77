"""The cluster's own controllers as requests name them: who empties a Terminating namespace.

kube-controller-manager's namespace controller deletes a Terminating namespace's content with
`deletecollection` and then calls `finalize` (k8s.io/kubernetes pkg/controller/namespace/deletion/
namespaced_resources_deleter.go). With `--use-service-account-credentials` it acts as its own
service account, without it as the controller manager's user. Both the webhook (what a
Terminating namespace exempts) and `correlate` (an empty collection calls no webhook) read this.
"""

from __future__ import annotations

NAMESPACE_CLEANERS = frozenset(
    {"system:serviceaccount:kube-system:namespace-controller", "system:kube-controller-manager"}
)
