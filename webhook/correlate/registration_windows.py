"""When kubefence was registered, from the audit log's own events of its webhook configuration.

A request that no kubefence webhook decided is a bypass only if kubefence was registered when it
was made, or should have been: on a fresh cluster the requests made before the
ValidatingWebhookConfiguration (the config's `drift.webhookConfiguration`) first existed are not
(the API server's own creation of `default` at start-up, the namespaces made while installing).
Its `creationTimestamp` alone would not tell: delete the configuration, act, create it again, and
the object looks as new as on the first day. So the standing of a request comes from the
configuration's writes that the log (or the monitor's feed) records:

- `BEFORE`: made before the configuration's first successful (2xx at ResponseComplete), non-dry-run
  create, or within `grace` after it (the API server loads configurations through an informer),
  when nothing before that create showed kubefence registered (a decision-id or failed-open
  annotation of ours: the traces). Counted, never listed as a bypass. The grace ends early at
  the first trace after the create: the API server has loaded the configuration by then.
- `UNREGISTERED`: from a successful delete (or deletecollection) of the configuration until its
  re-create plus `grace`: loudly a bypass, cause `unregistered`.
- `UNKNOWN`: nothing yet tells (no write of the configuration, no trace): the caller holds its
  judgement until something does (or gives up and assumes nothing: a plain `dodged`).
- `REGISTERED`: otherwise.

Where the audit Policy records no `admissionregistration.k8s.io` write nothing is assumed: with
no write of the configuration, the first trace settles every earlier request as `REGISTERED`.

Invariants: pure (records and times in, standings out; no I/O, no clock); windows are kept in
the order they open, at most `MAX_WINDOWS` (the oldest forgotten first); a write of another
configuration, a dry run, a failed write, an earlier stage are never a registration change.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from typing import Literal

from webhook.auditpolicy import Level, Policy, RequestAttributes
from webhook.correlate.records import AuditRecord

CONFIGURATION_GROUP = "admissionregistration.k8s.io"
CONFIGURATION_RESOURCE = "validatingwebhookconfigurations"
DEFAULT_GRACE = 5.0  # seconds after a create until the API server's informer surely has it
MAX_WINDOWS = 1024  # delete .. re-create windows remembered
_FINAL = "ResponseComplete"
# Who installs kubefence, as the audit Policy sees them: a cluster admin (kubectl, helm).
_INSTALLER = RequestAttributes(
    user="kubernetes-admin", groups=("system:masters", "system:authenticated")
)

Write = Literal["create", "delete"]


class Standing(StrEnum):
    UNKNOWN = "unknown"
    BEFORE = "before"
    REGISTERED = "registered"
    UNREGISTERED = "unregistered"


def is_configuration_event(record: AuditRecord) -> bool:
    """Whether the event is of a ValidatingWebhookConfiguration (any name, any verb)."""
    return record.group == CONFIGURATION_GROUP and record.resource == CONFIGURATION_RESOURCE


def configuration_write(record: AuditRecord, name: str) -> Write | None:
    """The successful, real create or delete of configuration `name` this event records, if any.

    A create is `create` answered 2xx, or a server-side apply (`patch`) answered 201 Created; a
    `?dryRun=All` create wrote nothing. A delete is `delete` of `name` or a `deletecollection`
    (which takes every configuration it selects, ours perhaps), answered 2xx; its dry run would
    be in a body the audit event does not show, so it is taken as real (a false alarm is the
    safe way to be wrong: it only relabels requests that are bypasses anyway).
    """
    if not name or record.stage != _FINAL or not is_configuration_event(record):
        return None
    code = record.code
    if code is None or not 200 <= code < 300:
        return None
    if record.verb == "deletecollection" or (record.verb == "delete" and record.name == name):
        return "delete"
    if record.name != name or record.dry_run:
        return None
    if record.verb == "create" or (record.verb == "patch" and code == 201):
        return "create"
    return None


def bypass_cause(cause: str, standing: Standing) -> str:
    """The cause a bypass is reported with, given the standing of its request: "" for none.

    Only a `dodged` bypass (no trace of kubefence at all) depends on it: a fail-open shows the
    API server called kubefence, so it was registered.
    """
    if cause != "dodged":
        return cause
    if standing is Standing.BEFORE:
        return ""
    if standing is Standing.UNREGISTERED:
        return "unregistered"
    return cause


class RegistrationWindows:
    """The standing of requests, from the configuration's writes and kubefence's traces, fed in
    (roughly) time order. `name` "" names no configuration: nothing is ever assumed."""

    def __init__(self, name: str, grace: float = DEFAULT_GRACE) -> None:
        self.name = name
        self.grace = grace
        self.resource_seen = False  # an event of any ValidatingWebhookConfiguration
        self.first_created: float | None = None  # the first create, with nothing before it
        self._first_until = float("-inf")  # the first create's grace ends here
        self._settled = False  # a write of the configuration or a trace seen: never UNKNOWN
        self._windows: deque[list[float]] = deque(maxlen=MAX_WINDOWS)  # [deleted, re-created]

    @property
    def settled(self) -> bool:
        return self._settled

    def observe(self, record: AuditRecord) -> bool:
        """Take an event of a configuration; whether it changed what the standings may be."""
        if not is_configuration_event(record):
            return False
        self.resource_seen = True
        write = configuration_write(record, self.name)
        if write == "create":
            created = record.stage_time
            if not self._settled:
                self.first_created, self._first_until = created, created + self.grace
            elif self._windows and self._windows[-1][1] == float("inf"):
                self._windows[-1][1] = max(self._windows[-1][0], created + self.grace)
        elif write == "delete":
            if not (self._windows and self._windows[-1][1] == float("inf")):
                self._windows.append([record.received, float("inf")])
        else:
            return False
        self._settled = True
        return True

    def traced(self, t: float) -> bool:
        """kubefence decided (or was failed open for) a request received at `t`; whether that
        changed what the standings may be."""
        if not self._settled:
            self._settled = True  # registered before anything the log shows of it
            return True
        first = self.first_created
        if first is not None and first <= t < self._first_until:
            self._first_until = t  # the API server has loaded the configuration by now
            return True
        return False

    def standing(self, t: float) -> Standing:
        """The standing of a request received at `t`, given what was fed so far."""
        for opened, closed in reversed(self._windows):
            if opened <= t < closed:
                return Standing.UNREGISTERED
            if closed <= t:
                break
        if self.first_created is not None and t < self._first_until:
            return Standing.BEFORE
        if not self._settled:
            return Standing.UNKNOWN
        return Standing.REGISTERED


def registration_notice(name: str, recorded: bool | None, resource_seen: bool) -> str | None:
    """What a report says once when the logs cannot tell when kubefence was registered: no
    configuration named, an audit Policy that does not record its writes (`recorded` False), or
    logs without one event of any webhook configuration (when no policy says it records them)."""
    after = (
        "requests made before kubefence was registered are listed as dodged bypasses (nothing is"
        " assumed); --since skips them"
    )
    if not name:
        return (
            f"no webhook configuration is named (the config's drift.webhookConfiguration): {after}"
        )
    if recorded is False:
        return (
            f"the audit Policy does not record writes of {CONFIGURATION_RESOURCE}"
            f" ({CONFIGURATION_GROUP}), so the log cannot show when {name} was created or"
            f" deleted: {after}; the README's audit trail section shows the rule to add"
        )
    if not resource_seen and recorded is None:
        return (
            f"the audit logs hold no event of {CONFIGURATION_RESOURCE} ({CONFIGURATION_GROUP}):"
            f" an audit Policy that leaves them out cannot show when {name} was created or"
            f" deleted, so {after}; the README's audit trail section shows the rule to add"
        )
    return None


def records_configuration_writes(policy: Policy, name: str) -> bool:
    """Whether `policy` records a cluster admin's create and delete of configuration `name` at
    ResponseComplete (the stage whose code tells a write succeeded), as kube-apiserver
    evaluates it."""
    for verb in ("create", "delete"):
        attrs = RequestAttributes(
            user=_INSTALLER.user,
            groups=_INSTALLER.groups,
            verb=verb,
            api_group=CONFIGURATION_GROUP,
            api_version="v1",
            resource=CONFIGURATION_RESOURCE,
            name=name if verb == "delete" else "",
            path=f"/apis/{CONFIGURATION_GROUP}/v1/{CONFIGURATION_RESOURCE}"
            + (f"/{name}" if verb == "delete" else ""),
        )
        result = policy.evaluate(attrs)
        if result.level is Level.NONE or _FINAL in result.omit_stages:
            return False
    return True
