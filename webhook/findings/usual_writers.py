"""Who usually writes each workload kind, with which operations: the audit-scope preflight's table.

`judge.audit_scope_preflight` runs the `audit-scope` rule for every row, as each writer: any
user, and the built-in controllers that create pods and their owners. `CONNECTS` are the pod and
service subresources any user may connect to (the built-in `edit` role grants the proxies),
`POD_UPDATES` those any user may update to start a process in a pod. Constants only.
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.admission import UserInfo


@dataclass(frozen=True, slots=True)
class Writer:
    label: str
    user: UserInfo


def controller_writer(name: str) -> Writer:
    """A kube-controller-manager controller, as its service account in kube-system."""
    username = f"system:serviceaccount:kube-system:{name}"
    groups = ("system:serviceaccounts", "system:serviceaccounts:kube-system")
    return Writer(name, UserInfo(username, (*groups, "system:authenticated")))


ANY_USER = Writer("any user", UserInfo("kubefence:any-user", ("system:authenticated",)))

# (group, version, resource, kind) -> who usually writes it, with which operations. The built-in
# controllers act under their own service accounts (kube-controller-manager's
# --use-service-account-credentials, the kubeadm default).
_CREATE_UPDATE = ("CREATE", "UPDATE")
USUAL_WRITERS: tuple[
    tuple[tuple[str, str, str, str], tuple[tuple[Writer, tuple[str, ...]], ...]], ...
] = (
    (
        ("", "v1", "pods", "Pod"),
        (
            (ANY_USER, _CREATE_UPDATE),
            (controller_writer("replicaset-controller"), ("CREATE",)),
            (controller_writer("daemon-set-controller"), ("CREATE",)),
            (controller_writer("statefulset-controller"), ("CREATE",)),
            (controller_writer("job-controller"), ("CREATE",)),
            (controller_writer("replication-controller"), ("CREATE",)),
        ),
    ),
    (("apps", "v1", "deployments", "Deployment"), ((ANY_USER, _CREATE_UPDATE),)),
    (
        ("apps", "v1", "replicasets", "ReplicaSet"),
        ((ANY_USER, _CREATE_UPDATE), (controller_writer("deployment-controller"), _CREATE_UPDATE)),
    ),
    (("apps", "v1", "statefulsets", "StatefulSet"), ((ANY_USER, _CREATE_UPDATE),)),
    (("apps", "v1", "daemonsets", "DaemonSet"), ((ANY_USER, _CREATE_UPDATE),)),
    (
        ("batch", "v1", "jobs", "Job"),
        ((ANY_USER, _CREATE_UPDATE), (controller_writer("cronjob-controller"), ("CREATE",))),
    ),
    (("batch", "v1", "cronjobs", "CronJob"), ((ANY_USER, _CREATE_UPDATE),)),
    (("", "v1", "replicationcontrollers", "ReplicationController"), ((ANY_USER, _CREATE_UPDATE),)),
)
# (resource, subresource, kind): nodes/proxy is cluster-scoped, outside a per-namespace preflight.
CONNECTS = (
    ("pods", "exec", "PodExecOptions"),
    ("pods", "attach", "PodAttachOptions"),
    ("pods", "portforward", "PodPortForwardOptions"),
    ("pods", "proxy", "PodProxyOptions"),
    ("services", "proxy", "ServiceProxyOptions"),
)
# Pod subresources any user may UPDATE that start a process: `kubectl debug`.
POD_UPDATES = ("ephemeralcontainers",)
