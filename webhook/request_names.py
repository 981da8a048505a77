"""The verbs and resource names kube-apiserver puts in a request's attributes, and what is not one.

The audit Policy matches the attributes the API server derives from the URL
(k8s.io/apiserver `endpoints/request/requestinfo.go`): a resource request's verb is one of
`RESOURCE_VERBS` (`""` for an OPTIONS to a connect subresource), a non-resource request's the
HTTP method in lower case, and a resource is the lower-case plural of the URL (`pods`, never
`pod` or `Pod`). A request a user types that the API server would never send matches other
rules silently (`PATCH` matches no `verbs: [patch]`), so `refusal` names the mistake and what
was meant.

Invariant: pure; it refuses only what the API server cannot send (upper case, a verb outside
the table, a built-in kind's singular); an unknown plural (a custom resource) passes.
"""

from __future__ import annotations

import difflib

RESOURCE_VERBS = (
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",  # the legacy /api/v1/proxy/... paths
)

# The plural resources of the built-in API groups, by group ("" is core).
_BY_GROUP = {
    "": "pods services configmaps secrets namespaces nodes endpoints events persistentvolumes"
    " persistentvolumeclaims serviceaccounts replicationcontrollers resourcequotas limitranges"
    " podtemplates bindings componentstatuses",
    "apps": "deployments replicasets statefulsets daemonsets controllerrevisions",
    "batch": "jobs cronjobs",
    "networking.k8s.io": "networkpolicies ingresses ingressclasses ipaddresses servicecidrs",
    "rbac.authorization.k8s.io": "roles rolebindings clusterroles clusterrolebindings",
    "policy": "poddisruptionbudgets",
    "storage.k8s.io": "storageclasses volumeattachments csidrivers csinodes"
    " csistoragecapacities volumeattributesclasses",
    "admissionregistration.k8s.io": "validatingwebhookconfigurations"
    " mutatingwebhookconfigurations validatingadmissionpolicies"
    " validatingadmissionpolicybindings mutatingadmissionpolicies"
    " mutatingadmissionpolicybindings",
    "apiextensions.k8s.io": "customresourcedefinitions",
    "apiregistration.k8s.io": "apiservices",
    "coordination.k8s.io": "leases",
    "discovery.k8s.io": "endpointslices",
    "events.k8s.io": "events",
    "autoscaling": "horizontalpodautoscalers",
    "certificates.k8s.io": "certificatesigningrequests",
    "scheduling.k8s.io": "priorityclasses",
    "node.k8s.io": "runtimeclasses",
    "flowcontrol.apiserver.k8s.io": "flowschemas prioritylevelconfigurations",
    "authentication.k8s.io": "tokenreviews selfsubjectreviews",
    "authorization.k8s.io": "subjectaccessreviews selfsubjectaccessreviews"
    " localsubjectaccessreviews selfsubjectrulesreviews",
    "resource.k8s.io": "resourceclaims resourceclaimtemplates resourceslices deviceclasses",
}
SERVED = frozenset(name for names in _BY_GROUP.values() for name in names.split())


def singular(plural: str) -> str:
    """The kind's lower-case name for a plural resource: `networkpolicies` -> `networkpolicy`,
    `ingresses` -> `ingress`, `pods` -> `pod`."""
    if plural.endswith("ies"):
        return plural[:-3] + "y"
    if plural.endswith(("sses", "uses")):
        return plural[:-2]
    return plural.removesuffix("s")


PLURAL_OF = {singular(p): p for p in SERVED if singular(p) != p}


def verb_refusal(verb: str, *, resource_request: bool) -> str | None:
    """Why the API server would never send `verb` (with the likely meant one), or None."""
    lower = verb.lower()
    if verb != lower:
        meant = f"did you mean {lower}" if not resource_request or lower in RESOURCE_VERBS else ""
        return _joined("the API server sends verbs in lower case", meant)
    if resource_request and verb and verb not in RESOURCE_VERBS:
        close = difflib.get_close_matches(verb, RESOURCE_VERBS, n=1)
        meant = f"did you mean {close[0]}" if close else f"one of {', '.join(RESOURCE_VERBS)}"
        return _joined("not a verb of a resource request", meant)
    return None


def resource_refusal(resource: str) -> str | None:
    """Why `resource` is no resource name the API server would send (with the plural meant),
    or None."""
    lower = resource.lower()
    plural = lower if lower in SERVED else PLURAL_OF.get(lower)
    if resource != lower:
        return _joined("resources are lower case", f"did you mean {plural}" if plural else "")
    if plural is not None and plural != resource:
        return f"resources are plural: did you mean {plural}"
    return None


def _joined(reason: str, hint: str) -> str:
    return f"{reason}: {hint}" if hint else reason
