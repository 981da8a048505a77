"""Rule `namespace-labels`: a label change must not quietly let a namespace into an allow rule.

A NetworkPolicy allow rule whose namespaceSelector keys on a label other than the immutable
`kubernetes.io/metadata.name` trusts whoever may label namespaces. On a Namespace UPDATE the old
and new labels are compared against every such selector in the cluster (the view's `TrustIndex`:
only the selectors keyed on a changed label are evaluated); each selector the namespace newly
matches is named, with its policy and the labels that made the difference. Mode
`namespaceLabels.mode` (default warn; enforce denies the change; off). Reads the cluster view as
it is: a policy this process has only just approved is not yet in it.
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.cluster.view import ClusterView
from webhook.label_trust import Newly
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.rules.result import NAMESPACE_LABELS, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject
from webhook.workloads import is_namespace

RULE = NAMESPACE_LABELS
SHOWN = 3  # hits named in a message; the rest are counted


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    if not is_namespace(request) or request.operation != "UPDATE" or request.sub_resource:
        return ()
    mode = settings.mode("namespaceLabels", subject.namespace)
    if mode is Mode.OFF:
        return ()
    old = labels_of(request.old_object, subject.namespace)
    new = labels_of(request.object, subject.namespace)
    if old == new:
        return (passed(RULE, mode, "no label changed"),)
    hits = cluster.label_trust().newly_matched(old, new)
    if not hits:
        return (passed(RULE, mode, "no allow rule newly matches the namespace"),)
    return (
        RuleResult(
            RULE,
            mode,
            False,
            message(subject.namespace, hits),
            warning=warning(subject.namespace, hits),
        ),
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


def message(namespace: str, hits: tuple[Newly, ...]) -> str:
    labels = ", ".join(dict.fromkeys(label for h in hits for label in h.labels))
    named = "; ".join(_hit(h) for h in hits[:SHOWN])
    more = f"; and {len(hits) - SHOWN} more" if len(hits) > SHOWN else ""
    return (
        f'namespace "{namespace}": the label change {labels} makes it match '
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
