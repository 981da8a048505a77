"""How the correlate renderings spell one cell: a time, a span, a resource, an object, a code.

Shared by the JSON, text, HTML and SVG renderings so a value reads the same in every format:
times in RFC 3339 UTC (`timestamps.format_time`), a missing object or status code as `-`, an
empty span as `(empty)`, durations in the largest whole unit (`2h`, `10m`, `90s`), counts with
their noun in the right number (`1 user`, `2 users`); retried calls grouped one way for the text
and the HTML (`retry_groups`). Pure.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

from webhook.correlate.model import Retried
from webhook.correlate.timestamps import format_time


def escape(text: str) -> str:
    """Text from the logs, safe inside HTML elements and quoted attributes."""
    return html.escape(text, quote=True)


def time_or_none(epoch: float | None) -> str | None:
    return None if epoch is None else format_time(epoch)


def span(first_last: tuple[float | None, float | None]) -> str:
    start, end = first_last
    if start is None or end is None:
        return "(empty)"
    return f"{format_time(start)} .. {format_time(end)}"


def resource_path(resource: str, subresource: str) -> str:
    return f"{resource}/{subresource}" if subresource else resource


def object_ref(namespace: str, name: str) -> str:
    """`namespace/name`; a Namespace (whose namespace is its own name) by its name alone."""
    if namespace and name and namespace != name:
        return f"{namespace}/{name}"
    return name or namespace or "-"


def status_code(code: int | None) -> str:
    return "-" if code is None else str(code)


def duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def counted(n: int, noun: str, nouns: str = "") -> str:
    """`1 user`, `2 users`: a count with its noun (`nouns`, else `noun` + "s", when not one)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def user_cell(user: str, auth_user: str) -> str:
    """The user a request ran as, after the authenticated one if it impersonated: `alice as sa`."""
    return f"{auth_user} as {user}" if auth_user and auth_user != user else user


@dataclass(frozen=True, slots=True)
class RetryGroup:
    """The retried calls of one user's operation on one object: one row of a report."""

    user: str
    operation: str  # with " (collection items)" for a deletecollection's
    resource: str
    target: str  # object_ref
    calls: int
    requests: int  # distinct audit events among them


def retry_groups(retried: Iterable[Retried]) -> list[RetryGroup]:
    """Retried calls grouped by user, operation, resource and object, most calls first (first
    seen first among equals): a request retried 144 times is one row, not 144."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for r in retried:
        op = r.operation + (" (collection items)" if r.collection else "")
        key = (r.user, op, r.resource, object_ref(r.namespace, r.name))
        groups.setdefault(key, []).append(r.audit_id)
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    return [RetryGroup(*key, len(ids), len(set(ids))) for key, ids in ordered]


def retry_rows_total(groups: int, listed: int, retried: int) -> int:
    """How many rows the retried table would have without --max-items: the groups of the calls
    listed, and one per call left unlisted (their groups are unknown)."""
    return groups + max(0, retried - listed)


def before_registration(count: int, configuration: str, first: float | None) -> str:
    """`3 requests before kubefence was registered (...)`: what a report says of them."""
    created = f"{configuration} first created {format_time(first)}" if first is not None else ""
    return (
        f"{counted(count, 'request')} before kubefence was registered"
        + (f" ({created})" if created else "")
        + ": not bypasses"
    )
