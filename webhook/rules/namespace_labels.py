"""Rule `namespace-labels`: a label change must not quietly let a namespace into an allow rule.

A NetworkPolicy allow rule whose namespaceSelector keys on a label other than the immutable
`kubernetes.io/metadata.name` trusts whoever may label namespaces. The labels a request gives a
Namespace are compared with those it had (none, for a CREATE) against every such selector in the
cluster (the view's `TrustIndex`: only the selectors keyed on a changed label are evaluated);
each selector the namespace newly matches is named, with its policy and the labels that made the
difference. Mode `namespaceLabels.mode` (default warn; enforce denies the change; off). Reads the
cluster view as it is: a policy this process has only just approved is not yet in it.

Judged: CREATE, and UPDATE of the namespace itself and of its `status` and `finalize`
subresources. Those two reset only `spec` or `status` and validate metadata as a plain update
does (k8s.io/kubernetes pkg/registry/core/namespace/strategy.go, namespaceStatusStrategy and
namespaceFinalizeStrategy; pkg/apis/core/validation ValidateNamespaceStatusUpdate and
ValidateNamespaceFinalizeUpdate call ValidateObjectMetaUpdate), so labels change through them too.
Invariants: a request that changes no label passes at the cost of one comparison (the namespace
controller's status and finalize writes during a deletion are such requests); the `finalize` call
of a namespace being deleted is never denied, whatever the mode: denying it would leave the
namespace Terminating for good, and no workload may be created in it any more (upstream
NamespaceLifecycle admission), so the finding is a warning there.
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.admission import AdmissionRequest
from webhook.cluster.view import ClusterView
from webhook.label_trust import Newly
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.rules.result import NAMESPACE_LABELS, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject
from webhook.workloads import is_namespace

RULE = NAMESPACE_LABELS
SHOWN = 3  # hits named in a message; the rest are counted


# (operation, subresource) pairs that may set a Namespace's labels.
JUDGED = frozenset({("CREATE", ""), ("UPDATE", ""), ("UPDATE", "status"), ("UPDATE", "finalize")})
FINALIZE = "finalize"


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    if not is_namespace(request) or (request.operation, request.sub_resource) not in JUDGED:
        return ()
    mode = settings.mode("namespaceLabels", subject.namespace)
    if mode is Mode.OFF:
        return ()
    created = request.operation == "CREATE"
    # A namespace being created matched nothing before: every label it comes with is a change.
    old = {} if created else labels_of(request.old_object, subject.namespace)
    new = labels_of(request.object, subject.namespace)
    if old == new:
        return (passed(RULE, mode, "no label changed"),)
    hits = cluster.label_trust().newly_matched(old, new)
    if not hits:
        return (passed(RULE, mode, "no allow rule newly matches the namespace"),)
    text = message(subject.namespace, hits, created=created)
    if mode is Mode.ENFORCE and finalizing(request):
        mode = Mode.WARN
        text += " Not denied: this is the finalize call of a namespace being deleted."
    return (RuleResult(RULE, mode, False, text, warning=warning(subject.namespace, hits)),)


def finalizing(request: AdmissionRequest) -> bool:
    """Whether `request` is the `finalize` UPDATE of a namespace being deleted: a denial would
    leave the namespace Terminating for good."""
    return (
        is_namespace(request)
        and request.operation == "UPDATE"
        and request.sub_resource == FINALIZE
        and being_deleted(request)
    )


def being_deleted(request: AdmissionRequest) -> bool:
    """Whether the stored namespace (else the new one) has a deletionTimestamp or is Terminating."""
    obj = request.old_object if request.old_object is not None else request.object
    meta = obj.get("metadata") if obj is not None else None
    status = obj.get("status") if obj is not None else None
    return bool(isinstance(meta, Mapping) and meta.get("deletionTimestamp")) or (
        isinstance(status, Mapping) and status.get("phase") == "Terminating"
    )


def labels_of(obj: Mapping[str, object] | None, name: str) -> dict[str, str]:
    """A Namespace object's labels, with the name label every namespace carries."""
    meta = obj.get("metadata") if obj is not None else None
    raw = meta.get("labels") if isinstance(meta, Mapping) else None
    labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    labels[NAMESPACE_NAME_LABEL] = name
    return labels


def _hit(hit: Newly) -> str:
    entry, peer = hit.entry, hit.entry.selector
    way = "admits traffic from" if peer.direction == "Ingress" else "lets its pods reach"
    return (
        f"NetworkPolicy {entry.namespace}/{entry.policy} ({peer.where}: {peer.describe()}) {way} it"
    )


def message(namespace: str, hits: tuple[Newly, ...], *, created: bool = False) -> str:
    labels = ", ".join(dict.fromkeys(label for h in hits for label in h.labels))
    named = "; ".join(_hit(h) for h in hits[:SHOWN])
    more = f"; and {len(hits) - SHOWN} more" if len(hits) > SHOWN else ""
    change = f"the label change {labels} makes it match"
    cause = f"created with {labels}, it matches" if created else change
    return (
        f'namespace "{namespace}": {cause} '
        f"{len(hits)} allow rule{'' if len(hits) == 1 else 's'} that trust namespace labels: "
        f"{named}{more}. Whoever may label namespaces decides who such a rule trusts; key it on "
        f"{NAMESPACE_NAME_LABEL} instead."
    )


def warning(namespace: str, hits: tuple[Newly, ...]) -> str:
    first = hits[0]
    labels = ", ".join(first.labels)
    more = f" (+{len(hits) - 1} more)" if len(hits) > 1 else ""
    # The policy and the label first: the line is cut at 120 characters, and the namespace is the
    # one the user just changed.
    return (
        f"label {labels}: NetworkPolicy {first.entry.namespace}/{first.entry.policy}{more} "
        f"now trusts namespace {namespace}"
    )
