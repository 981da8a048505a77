"""`kubefence audit-level`: the audit level an audit Policy gives one request, or each of many.

A request the API server would never send (`--verb PATCH`, `--resource pod`:
`webhook.request_names`) is refused, naming what was meant, and so is no request at all. A
`--requests FILE` is read and checked before anything is printed (all-or-nothing); `--requests -`
answers each line as it arrives, one JSON result per request in input order, so a program can
ask one question at a time over a pipe (`--format table` waits for the end: it aligns columns).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

import orjson

from webhook import exitcodes
from webhook.auditpolicy import STAGES, Evaluation, Policy, RequestAttributes, load_policy
from webhook.commands.cluster_flags import add_format_argument
from webhook.errors import InputError
from webhook.request_names import resource_refusal, verb_refusal

HELP = "evaluate an audit Policy for one request (flags) or many (--requests FILE.jsonl)"

# String keys of a --requests line -> RequestAttributes field (also the single-request flags).
_STRING_KEYS = {
    "verb": "verb",
    "apiGroup": "api_group",
    "apiVersion": "api_version",
    "resource": "resource",
    "subresource": "subresource",
    "namespace": "namespace",
    "name": "name",
    "path": "path",
}
_LINE_KEYS = frozenset(_STRING_KEYS) | {"user", "groups", "resourceRequest"}
_REQUEST_FLAGS = ("user", "groups", *_STRING_KEYS.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, metavar="FILE", help="the audit Policy file")
    parser.add_argument(
        "--requests",
        metavar="FILE.jsonl",
        help="one JSON request per line ('-' = stdin); instead of the request flags",
    )
    add_format_argument(
        parser, ("json", "table"), "json", "json: one object per request; table: for people"
    )
    one = parser.add_argument_group("one request")
    one.add_argument("--user", help="user name (absent: unauthenticated)")
    one.add_argument(
        "--group",
        dest="groups",
        action="append",
        metavar="GROUP",
        default=None,
        help="a group of the user (repeat for several)",
    )
    one.add_argument("--verb", help="e.g. get, list, create, update, patch, delete")
    one.add_argument("--api-group", help='"" (default) is the core group')
    one.add_argument("--api-version", help="the resource's API version, e.g. v1")
    one.add_argument("--resource", help="the resource, plural, e.g. deployments")
    one.add_argument("--subresource", help="e.g. exec, scale, status, proxy")
    one.add_argument("--namespace", help="the namespace (absent: a cluster-scoped request)")
    one.add_argument("--name", help="the object's name as the URL carries it")
    one.add_argument("--path", help="request path; alone, a non-resource request")
    # For the refusal of no request at all: what to type, as bare `kubefence` shows it.
    parser.set_defaults(usage=parser.format_usage())


def run(args: argparse.Namespace) -> int:
    policy = _read_policy(args.policy)
    if args.requests == "-" and args.format == "json":
        _no_request_flags(args)
        out = sys.stdout
        for _, attrs in _from_lines(sys.stdin, "<stdin>"):
            out.write(orjson.dumps(_as_json(policy.evaluate(attrs))).decode() + "\n")
            out.flush()  # the answer now, not when the pipe closes
        return exitcodes.OK
    numbered = _requests_from(args)
    requests = [attrs for _, attrs in numbered]
    results = [policy.evaluate(attrs) for attrs in requests]
    if args.format == "table":
        _print_table(numbered, results)
    else:
        out = sys.stdout
        for result in results:
            out.write(orjson.dumps(_as_json(result)).decode() + "\n")
    return exitcodes.OK


def _read_policy(path: str) -> Policy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return load_policy(text, path)


def _request_flags(args: argparse.Namespace) -> list[str]:
    return [f"--{f.replace('_', '-')}" for f in _REQUEST_FLAGS if getattr(args, f) is not None]


def _no_request_flags(args: argparse.Namespace) -> None:
    flags = _request_flags(args)
    if flags:
        raise InputError(f"--requests cannot be combined with {', '.join(flags)}")


def _requests_from(args: argparse.Namespace) -> list[tuple[int | None, RequestAttributes]]:
    """The requests with their line numbers in --requests (None for the one given by flags)."""
    if args.requests is None:
        if not _request_flags(args):
            sys.stderr.write(getattr(args, "usage", ""))
            raise InputError(
                "no request: give its flags (--verb get --resource pods ..., or --path) or"
                " --requests FILE.jsonl"
            )
        return [(None, _from_flags(args))]
    _no_request_flags(args)
    source = "<stdin>" if args.requests == "-" else args.requests
    try:
        if args.requests == "-":
            return list(_from_lines(sys.stdin, source))
        with Path(args.requests).open(encoding="utf-8") as stream:
            return list(_from_lines(stream, source))
    except UnicodeDecodeError:
        raise InputError(f"{source}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror or exc}") from None


def _from_flags(args: argparse.Namespace) -> RequestAttributes:
    strings = {attr: getattr(args, attr) or "" for attr in _STRING_KEYS.values()}
    resource_request = args.path is None or args.resource is not None
    for key, reason in _refusals(strings, resource_request):
        raise InputError(
            f"--{_STRING_KEYS[key].replace('_', '-')} {strings[_STRING_KEYS[key]]}: {reason}"
        )
    return _attributes(args.user, tuple(args.groups or ()), resource_request, strings)


def _refusals(strings: Mapping[str, str], resource_request: bool) -> Iterator[tuple[str, str]]:
    """(line key, reason) for each attribute the API server would never send."""
    verb = verb_refusal(strings["verb"], resource_request=resource_request)
    if verb is not None:
        yield "verb", verb
    resource = resource_refusal(strings["resource"]) if resource_request else None
    if resource is not None:
        yield "resource", resource


def _attributes(
    user: str | None, groups: tuple[str, ...], resource_request: bool, strings: Mapping[str, str]
) -> RequestAttributes:
    return RequestAttributes(
        user=user,
        groups=groups,
        verb=strings["verb"],
        resource_request=resource_request,
        api_group=strings["api_group"],
        api_version=strings["api_version"],
        resource=strings["resource"],
        subresource=strings["subresource"],
        namespace=strings["namespace"],
        name=strings["name"],
        path=strings["path"],
    )


def _from_lines(stream: IO[str], source: str) -> Iterator[tuple[int, RequestAttributes]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield number, _from_line(line)
        except _LineError as exc:
            where = f"{source}:{number}: {exc.field}: " if exc.field else f"{source}:{number}: "
            raise InputError(where + exc.reason) from None


class _LineError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


def _from_line(line: str) -> RequestAttributes:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _LineError("", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _LineError("", "must be a JSON object")
    for key in obj:
        if key not in _LINE_KEYS:
            raise _LineError(key, "unknown key")
    strings = {attr: _string(obj, key) for key, attr in _STRING_KEYS.items()}
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise _LineError("user", "must be a string or null")
    resource_request = _resource_request(obj)
    for key, reason in _refusals(strings, resource_request):
        raise _LineError(key, f"{obj[key]!r}: {reason}")
    return _attributes(user, _groups(obj), resource_request, strings)


def _string(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise _LineError(key, "must be a string")
    return value


def _groups(obj: Mapping[str, object]) -> tuple[str, ...]:
    value = obj.get("groups", [])
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise _LineError("groups", "must be a list of strings")
    return tuple(value)


def _resource_request(obj: Mapping[str, object]) -> bool:
    if "resourceRequest" not in obj:
        return "path" not in obj or "resource" in obj
    value = obj["resourceRequest"]
    if not isinstance(value, bool):
        raise _LineError("resourceRequest", "must be true or false")
    return value


def _as_json(result: Evaluation) -> dict[str, object]:
    return {
        "level": result.level.wire,
        "rule": result.rule,
        "omitStages": [stage for stage in STAGES if stage in result.omit_stages],
        "omitManagedFields": result.omit_managed_fields,
    }


def _target(attrs: RequestAttributes) -> str:
    if not attrs.resource_request:
        return attrs.path
    parts = [attrs.api_group or "core", attrs.resource]
    if attrs.subresource:
        parts.append(attrs.subresource)
    where = "/".join(parts)
    if attrs.namespace or attrs.name:
        where += f" {attrs.namespace or '-'}/{attrs.name or '-'}"
    return where


def _print_table(
    requests: Iterable[tuple[int | None, RequestAttributes]], results: Iterable[Evaluation]
) -> None:
    """One row a request: LINE is its line in --requests (from 1, as error messages count), RULE
    the matching rule as `rules[N]` (from 0, as kube-apiserver names rules)."""
    header = (
        "LINE",
        "USER",
        "VERB",
        "TARGET",
        "LEVEL",
        "RULE",
        "OMIT STAGES",
        "OMIT MANAGED FIELDS",
    )
    rows = [header]
    for (number, attrs), result in zip(requests, results, strict=True):
        stages = [stage for stage in STAGES if stage in result.omit_stages]
        rows.append(
            (
                "-" if number is None else str(number),
                attrs.user if attrs.user is not None else "(unauthenticated)",
                attrs.verb or "-",
                _target(attrs) or "-",
                result.level.wire,
                "-" if result.rule is None else f"rules[{result.rule}]",
                ",".join(stages) or "-",
                "yes" if result.omit_managed_fields else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
        sys.stdout.write("\n")
