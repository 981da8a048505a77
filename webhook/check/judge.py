"""`kubefence check`, the judgement: every object as the requests the API server would send for it,
decided by `webhook.decide` itself, so check and the webhook cannot disagree.

The requests of an object (`requests_for`): a Namespace's, NetworkPolicy's or workload's own
CREATE, by a user who applies the manifest; then, for a workload, each CREATE its controllers
make from its template, by their service accounts: `webhook.findings.recreation.made_by`, the
table scan's gate judges by too (a Deployment's ReplicaSet and its Pod, a CronJob's Job and its
Pod, the Pod of the other kinds). A bare Pod is its own CREATE. Status is not read: the API server
drops a created object's status, so a manifest's finished Job still makes Pods. The controllers'
requests matter where the user's does not show it: an audit Policy that records Deployments but
not the replicaset-controller's Pods (`audit-scope`), an exempt group.
An object's findings are the failed results of its first request, then those of later requests
whose rule the earlier ones did not fail: the user's CREATE names the fields as the manifest
has them (`spec.template.spec.hostNetwork`), the Pod's would repeat it as `spec.hostNetwork`.
An audit-scope finding is about its request's resource and writer: each different one counts.

The cluster they are decided on is the one the manifests describe (`cluster_of`): their
Namespaces (labels) and NetworkPolicies, over a base view (`--state DIR` or a live cluster) in
which a manifest replaces the object of the same kind, namespace and name, as `kubectl apply`
would. A NetworkPolicy's CREATE is decided on that cluster without itself, as if created last,
whatever the order of the files, so a policy that neutralises a fence the manifests also make is
found. A policy the webhook would deny is never created: the other objects are decided on the
cluster without it (a policy it only warns about joins it, and a workload it unfences is found
with the remedy that names it). A Namespace's CREATE warns that workloads need a fence only when
that cluster gives it none.

The modes are judged as enforce would judge them: the command passes the modes the chart's
`mode: enforce` renders (`webhook.findings.enforce_modes.enforce_settings`, scan's gate's), unless
`--as-configured`. `denies` marks a finding enforce would deny: what makes `check` exit 1.
Pure: objects and settings in, a report out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.admission import AdmissionRequest
from webhook.check.manifests import Located
from webhook.cluster.manifest_check import KINDS as REFUSED_KINDS
from webhook.cluster.manifest_check import refusal
from webhook.cluster.view import NamespaceFacts, StaticView, namespace_facts
from webhook.decide import Decision, decide
from webhook.errors import ManifestError
from webhook.findings.host import WORKLOAD_KINDS
from webhook.findings.recreation import create_request, made_by
from webhook.findings.usual_writers import ANY_USER, Writer
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.netpol import Limits, PolicyFacts, analyse_policy
from webhook.remedy import remedy
from webhook.rules.default_deny import unfenced_directions
from webhook.rules.result import AUDIT_SCOPE, DEFAULT_DENY, RuleResult
from webhook.settings import Mode, Settings

# The (API group, resource) of the kinds judged besides workloads (`WORKLOAD_KINDS`).
_RESOURCES = {
    "Namespace": ("", "namespaces"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
}
UID = "kubefence-check"
JUDGED_KINDS = frozenset({"Namespace", "NetworkPolicy", *WORKLOAD_KINDS})
# The kinds a namespace-less manifest is applied to -n's namespace for.
_CLUSTER_SCOPED = frozenset({"Namespace"})


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str  # the rule id, as in the `rules` audit annotation
    mode: str  # enforce | warn | audit: the mode it was judged in
    message: str
    fix: str  # what fixes it ("" when the message says so itself)
    request: str  # the request it was found on: `Pod CREATE by system:serviceaccount:...`

    @property
    def denies(self) -> bool:
        return self.mode == Mode.ENFORCE.value


@dataclass(frozen=True, slots=True)
class Judged:
    """One object and what the webhook would answer to the requests it leads to."""

    file: str
    line: int
    kind: str
    namespace: str  # "" for a Namespace
    name: str
    template: str  # `helm template`'s `# Source:`, when given
    findings: tuple[Finding, ...]
    exempt: str = ""  # why no rule judged it, when none did

    @property
    def label(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )


@dataclass(frozen=True, slots=True)
class CheckReport:
    judged: tuple[Judged, ...]  # in the order of the input
    ignored: Mapping[str, int] = field(default_factory=dict)  # kinds not judged: how many
    notes: tuple[str, ...] = ()
    files: int = 0

    @property
    def findings(self) -> int:
        return sum(len(j.findings) for j in self.judged)

    @property
    def denied(self) -> int:
        return sum(1 for j in self.judged for f in j.findings if f.denies)


def placed(objects: Iterable[Located], namespace: str | None) -> list[Located]:
    """The objects with the namespace `kubectl apply -n NAMESPACE` gives them: a namespaced
    object without one takes `namespace` (else `default`); one whose namespace differs from the
    given one is a ManifestError, as kubectl refuses it."""
    out = []
    for located in objects:
        obj = located.object
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping):
            meta = {}
        if obj.get("kind") in JUDGED_KINDS and not (meta.get("name") or meta.get("generateName")):
            raise ManifestError(
                f"{located.file}:{located.line}: {obj.get('kind')}: metadata.name: is required"
            )
        if obj.get("kind") in _CLUSTER_SCOPED:
            out.append(located)
            continue
        own = meta.get("namespace")
        if own and namespace and own != namespace:
            raise ManifestError(
                f"{located.file}:{located.line}: {obj.get('kind')}: metadata.namespace "
                f'"{own}" does not match the namespace "{namespace}" given with -n'
            )
        if own:
            out.append(located)
        else:
            meta = {**meta, "namespace": namespace or "default"}
            out.append(replace(located, object={**obj, "metadata": meta}))
    return out


def cluster_of(
    objects: Sequence[Located], base: StaticView | None, limits: Limits
) -> dict[str, NamespaceFacts]:
    """The cluster the manifests describe, over `base`: by namespace name. A manifest the API
    server would refuse to create (`manifest_check`) is a ManifestError naming file and line."""
    labels: dict[str, dict[str, str]] = {}
    terminating: dict[str, bool] = {}
    running: dict[str, int | None] = {}
    policies: dict[str, dict[str, PolicyFacts]] = {}
    for facts in (base.namespace(n) for n in base.names()) if base else ():
        if facts is None:
            continue
        labels[facts.name] = dict(facts.labels)
        terminating[facts.name] = facts.terminating
        running[facts.name] = facts.running_pods
        policies[facts.name] = {p.name: p for p in facts.policies}
    for located in objects:
        obj = located.object
        kind = obj.get("kind")
        refused = refusal(obj) if kind in REFUSED_KINDS else None
        if refused is not None:
            raise ManifestError(f"{located.file}:{located.line}: {kind}: {refused}")
        if kind not in ("Namespace", "NetworkPolicy"):
            continue
        meta = obj.get("metadata") or {}
        if kind == "Namespace":
            name = str(meta["name"])
            own = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
            labels[name] = {**own, NAMESPACE_NAME_LABEL: name}
        else:
            policy = analyse_policy(obj, limits)
            policies.setdefault(policy.namespace, {})[policy.name] = policy
    names = set(labels) | set(policies)
    return {
        name: _facts(
            name,
            tuple(policies.get(name, {}).values()),
            labels=labels.get(name),
            terminating=terminating.get(name, False),
            running=running.get(name),
            limits=limits,
        )
        for name in sorted(names)
    }


def _facts(
    name: str,
    policies: Sequence[PolicyFacts],
    *,
    labels: Mapping[str, str] | None,
    terminating: bool,
    running: int | None,
    limits: Limits,
) -> NamespaceFacts:
    return namespace_facts(
        name,
        policies,
        labels=labels or {NAMESPACE_NAME_LABEL: name},
        terminating=terminating,
        running_pods=running,
        limits=limits,
    )


def check(
    objects: Sequence[Located],
    settings: Settings,
    base: StaticView | None = None,
    *,
    notes: Sequence[str] = (),
    files: int = 0,
) -> CheckReport:
    """Judge every object of the manifests (placed already, see `placed`): the NetworkPolicies
    first, each on the cluster without itself; the rest on the cluster without the policies
    the webhook would deny, which never get created."""
    cluster = cluster_of(objects, base, settings.limits)
    judged: dict[int, Judged] = {}
    ignored: dict[str, int] = {}
    denied: set[tuple[str, str]] = set()
    for index, located in enumerate(objects):
        kind = str(located.object.get("kind"))
        if kind not in JUDGED_KINDS:
            ignored[kind] = ignored.get(kind, 0) + 1
        elif kind == "NetworkPolicy":
            namespace, name = _identity(located)
            before = _without(cluster, {(namespace, name)}, settings.limits)
            judged[index] = _judged(located, before, settings)
            if any(f.denies for f in judged[index].findings):
                denied.add((namespace, name))
    admitted = _without(cluster, denied, settings.limits)
    for index, located in enumerate(objects):
        kind = str(located.object.get("kind"))
        if kind in JUDGED_KINDS and kind != "NetworkPolicy":
            judged[index] = _judged(located, admitted, settings)
    in_order = tuple(judged[i] for i in sorted(judged))
    return CheckReport(in_order, ignored, tuple(notes), files)


def _identity(located: Located) -> tuple[str, str]:
    """(namespace, name) of an object; the namespace is "" for a Namespace."""
    obj = located.object
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = str(meta.get("name") or meta.get("generateName") or "")
    if obj.get("kind") in _CLUSTER_SCOPED:
        return "", name
    return str(meta.get("namespace") or ""), name


def _judged(located: Located, cluster: Mapping[str, NamespaceFacts], settings: Settings) -> Judged:
    """One object's findings: the failed results of each request it leads to, a rule once."""
    obj = located.object
    namespace, name = _identity(located)
    view = StaticView(cluster)
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    exempt = ""
    for index, (label, request) in enumerate(requests_for(obj)):
        decision = decide(request, view, settings)
        if index == 0:
            exempt = decision.exempt
        fresh = [r for r in decision.failed if _once(r) not in seen]
        findings += [
            _finding(
                r, label, request=request, decision=decision, cluster=cluster, settings=settings
            )
            for r in fresh
            if not _needless_namespace_warning(r, request, cluster, settings)
        ]
        seen |= {_once(r) for r in fresh}
    kind = str(obj.get("kind"))
    return Judged(
        located.file, located.line, kind, namespace, name, located.template, tuple(findings), exempt
    )


def _once(result: RuleResult) -> tuple[str, str]:
    """What a finding repeats on a later request of the same object: its rule, whose text there
    names the made object's own fields; an audit-scope finding is about the request's resource
    and writer, so each different one counts."""
    return (result.rule, result.message if result.rule == AUDIT_SCOPE else "")


def _without(
    cluster: Mapping[str, NamespaceFacts], policies: set[tuple[str, str]], limits: Limits
) -> Mapping[str, NamespaceFacts]:
    """The cluster without the NetworkPolicies `policies` ((namespace, name) pairs)."""
    changed = dict(cluster)
    for namespace in {ns for ns, _ in policies}:
        facts = cluster.get(namespace)
        if facts is None:
            continue
        names = {name for ns, name in policies if ns == namespace}
        rest = tuple(p for p in facts.policies if p.name not in names)
        if len(rest) == len(facts.policies):
            continue
        changed[namespace] = _facts(
            namespace,
            rest,
            labels=facts.labels,
            terminating=facts.terminating,
            running=facts.running_pods,
            limits=limits,
        )
    return changed


def _needless_namespace_warning(
    result: RuleResult,
    request: AdmissionRequest,
    cluster: Mapping[str, NamespaceFacts],
    settings: Settings,
) -> bool:
    """A Namespace CREATE's "workloads will be denied until it has a default-deny" when the
    manifests give it one: true of the webhook's moment, not of the manifests' cluster."""
    if result.rule != DEFAULT_DENY or request.resource.resource != "namespaces":
        return False
    missing, _ = unfenced_directions(cluster.get(request.name), settings)
    return not missing


def _finding(
    result: RuleResult,
    label: str,
    *,
    request: AdmissionRequest,
    decision: Decision,
    cluster: Mapping[str, NamespaceFacts],
    settings: Settings,
) -> Finding:
    """A failed result as a finding; an unfenced namespace's with the denial's own remedy
    (`webhook.remedy`) as its fix, and the rest of the denial text as its message."""
    message, fix = result.message, ""
    if result.rule == DEFAULT_DENY and request.resource.resource != "namespaces":
        facts = cluster.get(decision.namespace)
        missing, neutralised = unfenced_directions(facts, settings)
        if missing:
            taken = [p.name for p in facts.policies] if facts is not None else []
            isolated = [
                d for d in missing if facts is not None and facts.fence(d, settings.strict).fencing
            ]
            steps = remedy(decision.namespace, missing, neutralised, taken, isolated).steps()
            fix = "\n".join(steps)
            if fix and message.endswith("\n" + fix):
                message = message[: -len(fix) - 1]
    return Finding(result.rule, result.mode.value, message, fix, label)


def requests_for(obj: Mapping[str, Any]) -> list[tuple[str, AdmissionRequest]]:
    """The CREATEs an object leads to, each with a label: its own by whoever applies it, then
    those its controllers make from it (`recreation.made_by`, the table scan's gate judges by)."""
    kind = str(obj.get("kind"))
    resource = _RESOURCES.get(kind) or WORKLOAD_KINDS[kind]
    own = create_request(resource, obj, ANY_USER, UID)
    made = made_by(obj, UID) if kind in WORKLOAD_KINDS else ()
    return [_labelled(own, ANY_USER), *(_labelled(m.request, m.writer) for m in made)]


def _labelled(request: AdmissionRequest, writer: Writer) -> tuple[str, AdmissionRequest]:
    who = "whoever applies it" if writer is ANY_USER else writer.user.username
    return f"{request.kind.kind} CREATE by {who}", request
