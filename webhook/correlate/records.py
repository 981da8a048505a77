"""What the readers yield: one record per audit Event stage or decision line, and per-file stats.

Records are plain mutable data with only the fields correlate reads; they hold no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

# The one `dryRun` value the API server accepts (metav1.DryRunAll).
DRY_RUN_ALL = "All"
# The audit verbs whose options a request body overrides, `dryRun` included (handlers/delete.go).
BODY_OPTION_VERBS = frozenset({"delete", "deletecollection"})


@dataclass(slots=True)
class AuditRecord:
    """The fields of one audit Event that correlate reads (one stage of one request)."""

    audit_id: str
    stage: str
    verb: str
    user: str  # the user the webhook saw: the impersonated one when there is one
    auth_user: str  # the authenticated user (the audit policy's and the request key's)
    group: str
    resource: str
    subresource: str
    namespace: str  # the subject namespace: a Namespace object's own name
    name: str
    code: int | None
    received: float
    received_text: str
    stage_time: float
    uri: str
    decision_ids: tuple[str, ...]  # ours, one per configured webhook name present
    failed_open: str  # the first of our webhook names that failed open, or ""
    registered: bool
    sensitive: bool
    denied: bool = False  # one of our webhooks denied it (its `decision` annotation is `deny`)
    # The directions our webhook said letting it through left unfenced (`fence-lost`), or ()
    fence_lost: tuple[str, ...] = ()
    impersonated_user: str = ""  # "" when the request was not impersonated
    groups: tuple[str, ...] = ()  # the authenticated user's
    source_ips: tuple[str, ...] = ()
    user_agent: str = ""
    # A ValidatingWebhookConfiguration's event (`registration_windows`): kubefence's own may be it
    configuration: bool = False

    @property
    def resource_key(self) -> str:
        return f"{self.group}/{self.resource}" if self.group else self.resource

    @property
    def request_key(self) -> tuple[str, str, str, str, str]:
        return (self.audit_id, self.received_text, self.auth_user, self.verb, self.uri)

    @property
    def dry_run(self) -> bool:
        """Whether the request was a dry run, as far as its URI can prove it.

        Only for verbs whose options come from the query alone: a delete or deletecollection
        with a body takes `dryRun` from the body and ignores the query (`uri_dry_run`), so it is
        never called a dry run here, whatever its URI says.
        """
        return self.verb not in BODY_OPTION_VERBS and uri_dry_run(self.uri)


def uri_dry_run(uri: str) -> bool:
    """Whether a request URI makes the request a dry run, as the API server reads its query.

    The options decode the exact, case-sensitive `dryRun` parameter, every repetition of it
    (apimachinery meta/v1 zz_generated.conversion.go), and a request is a dry run when that list
    is not empty (apiserver pkg/util/dryrun: `IsDryRun`). Validation then admits only `All` in it
    (apimachinery meta/v1/validation: `ValidateDryRun`): a `dryRun=` empty or unknown value is a
    400, so such a request never succeeds and is no dry run that did anything. Other parameters
    are ignored by the API server, so `?x=dryRun=` is a real request. Pairs Go's query parser
    would skip (a bad escape, a `;`) never decode here to `dryRun=All`, so an answer of True is
    one the API server agrees with about the query.

    Sound only where the options come from the query alone (create, update, patch): a delete or
    deletecollection with a body takes its DeleteOptions, `dryRun` included, from the body and
    ignores the query (apiserver pkg/endpoints/handlers/delete.go), so `?dryRun=All` with a body
    `{}` really deletes, and `kubectl delete --dry-run=server` puts `dryRun` in the body only. A
    Metadata-level audit event does not show the body, so for those verbs a True here proves
    nothing (`AuditRecord.dry_run` does not believe it).
    """
    query = urlsplit(uri).query
    if "dryRun" not in query and "%" not in query:  # the common case, without parsing
        return False
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "dryRun"]
    return bool(values) and all(v == DRY_RUN_ALL for v in values)


@dataclass(slots=True)
class DecisionRecord:
    """The fields of one `admission.decision` line that correlate reads."""

    decision_id: str
    time: float
    time_text: str
    decision: str
    allowed: bool
    denied_by: tuple[str, ...]
    operation: str
    resource: str  # "group/resource" or "resource", as the decision log writes it
    subresource: str
    namespace: str
    name: str
    user: str
    dry_run: bool
    client: str = ""  # the verified certificate subject, "unauthenticated", or "" (older logs)
    peer: str = ""
    common_names: tuple[str, ...] = ()  # of `client`, parsed


@dataclass(slots=True)
class SourceStats:
    """What reading one file gave: line and event counts, its time span, where it failed.

    `records` counts the valid records of the file's kind (audit Events, or decision lines)
    whatever the report window; `first_other_line` is the first non-blank line that is not one
    (0: none), with its first MiB in `first_other`, so a file with no record at all can be
    refused naming what it holds instead.
    """

    name: str
    lines: int = 0
    events: int = 0  # audit: Events (one per stage) in the report window; else decision lines
    malformed: int = 0
    first: float | None = None
    last: float | None = None
    error_line: int = 0  # the line being read when the source raised (0: it did not)
    records: int = 0
    first_other_line: int = 0
    first_other: bytes = b""

    def other(self, number: int, line: bytes) -> None:
        """Line `number` is not a record of this file's kind; the first such is remembered."""
        if not self.first_other_line:
            self.first_other_line, self.first_other = number, line[: 1 << 20]
