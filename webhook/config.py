"""The kubefence config file (docs/design.md, "Configuration"): parsed and validated into one
frozen `Settings`.

Every key is optional; unknown keys and wrong types raise ConfigError naming the file and the field
path (`config.yaml: defaultDeny.require[1]: must be Ingress or Egress`). Paths inside the file are
relative to its folder. File reading is injected, so parsing stays testable without a disk.

Only `true` and `false` are booleans here: YAML 1.1 would read a bare `off`, `on`, `yes` or `no`
as one, so `mode: no` would turn a rule off while `mode: yes` was an error. They stay the words
they are, so a mode is exactly one of enforce, warn, audit, off (bare or quoted) and every other
word, yes/no and true/false included, is an error naming the field.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from webhook.auditpolicy import Level, Policy, load_policy
from webhook.drift import DriftSpec
from webhook.errors import ConfigError
from webhook.hostreach import normalise_path
from webhook.labels import LabelSelector, SelectorError, parse_selector
from webhook.netpol import DEFAULT_LIMITS, Direction, Limits
from webhook.netpol_limits import CONFIG_KEYS as LIMIT_KEYS
from webhook.reach import PEER_RANGES, PeerSpace, peer_space
from webhook.settings import (
    DEFAULT_SETTINGS,
    DEFAULT_WEBHOOK_NAME,
    HOST_NETWORK_MODES,
    MODE_KEYS,
    Exemptions,
    Mode,
    Settings,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def load_settings(path: str | Path | None) -> Settings:
    """Read and parse a config file; None gives the defaults."""
    if path is None:
        return parse_settings("", "(defaults)", Path())
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.__class__.__name__}") from None
    return parse_settings(text, str(path), path.parent, _read_text)


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def parse_settings(
    text: str, source: str, base_dir: Path, read_text: Callable[[Path], str] = _read_text
) -> Settings:
    """Parse the YAML text of a config file; `read_text` reads the audit policy file it names."""
    try:
        doc = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(source, where, "not valid YAML") from None
    if doc is None:
        doc = {}
    reader = _Reader(source)
    root = reader.mapping(doc, "", _TOP_KEYS)
    modes = dict(DEFAULT_SETTINGS.modes)
    require = DEFAULT_SETTINGS.require
    strict = False
    deny = reader.mapping(root.get("defaultDeny"), "defaultDeny", _DEFAULT_DENY_KEYS)
    modes["defaultDeny"] = reader.mode(deny, "defaultDeny", "mode", modes["defaultDeny"])
    modes["allowAll"] = reader.mode(deny, "defaultDeny", "allowAll", modes["allowAll"])
    modes["allowAllSelected"] = reader.mode(
        deny, "defaultDeny", "allowAllSelected", modes["allowAllSelected"]
    )
    modes["allowNearlyAll"] = reader.mode(
        deny, "defaultDeny", "allowNearlyAll", modes["allowNearlyAll"]
    )
    if "require" in deny:
        require = reader.directions(deny["require"], "defaultDeny.require")
    if "definition" in deny:
        definition = reader.choice(
            deny["definition"], "defaultDeny.definition", ("isolating", "strict")
        )
        strict = definition == "strict"
    host = reader.mapping(root.get("hostNetwork"), "hostNetwork", _HOST_NETWORK_KEYS)
    modes["hostNetwork"] = reader.mode(host, "hostNetwork", "mode", modes["hostNetwork"])
    for key in _HOST_NETWORK_KEYS[1:-1]:
        modes[key] = reader.mode(host, "hostNetwork", key, modes[key])
    host_paths = DEFAULT_SETTINGS.host_paths
    if "hostPaths" in host:
        host_paths = reader.absolute_paths(host["hostPaths"], "hostNetwork.hostPaths")
    scope = reader.mapping(root.get("auditScope"), "auditScope", _AUDIT_SCOPE_KEYS)
    modes["auditScope"] = reader.mode(scope, "auditScope", "mode", modes["auditScope"])
    policy, policy_file, policy_text = _audit_policy(reader, scope, base_dir, read_text)
    min_level = Level.METADATA
    if scope.get("minLevel") is not None:
        min_level = reader.level(scope["minLevel"], "auditScope.minLevel")
    selector = None
    if scope.get("namespaceSelector") is not None:
        selector = reader.selector(scope["namespaceSelector"], "auditScope.namespaceSelector")
    labels = reader.mapping(root.get("namespaceLabels"), "namespaceLabels", ("mode",))
    modes["namespaceLabels"] = reader.mode(
        labels, "namespaceLabels", "mode", modes["namespaceLabels"]
    )
    cache = reader.mapping(root.get("cache"), "cache", ("maxStaleness", "onStale"))
    server = reader.mapping(root.get("server"), "server", ("maxBodyBytes",))
    settings = Settings(
        webhook_names=_webhook_names(reader, root),
        modes=modes,
        require=require,
        strict=strict,
        host_paths=host_paths,
        audit_policy=policy,
        audit_policy_file=policy_file,
        min_level=min_level,
        audit_namespace_selector=selector,
        exemptions=_exemptions(reader, root.get("exemptions")),
        overrides=_overrides(reader, root.get("overrides")),
        max_staleness=reader.duration(cache.get("maxStaleness", "60s"), "cache.maxStaleness"),
        deny_on_stale=reader.choice(
            cache.get("onStale", "deny"), "cache.onStale", ("deny", "allow")
        )
        == "deny",
        drift=_drift(reader, root.get("drift")),
        limits=_limits(reader, root.get("limits"), _peer_space(reader, deny)),
        max_body_bytes=reader.positive_int(
            server.get("maxBodyBytes", DEFAULT_SETTINGS.max_body_bytes), "server.maxBodyBytes"
        ),
    )
    digest = hashlib.sha256(text.encode())
    digest.update(b"\0" + policy_text.encode())
    return _with_revision(settings, digest.hexdigest()[:12])


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's booleans: `true`/`false` only (`off` stays a word)."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _with_revision(settings: Settings, revision: str) -> Settings:
    return replace(settings, revision=revision)


_TOP_KEYS = (
    "webhookName",
    "webhookNames",
    "defaultDeny",
    "hostNetwork",
    "auditScope",
    "namespaceLabels",
    "exemptions",
    "overrides",
    "cache",
    "server",
    "drift",
    "limits",
)
_DEFAULT_DENY_KEYS = (
    "mode",
    "require",
    "definition",
    "allowAll",
    "allowAllSelected",
    "allowNearlyAll",
    "peerRanges",
)
# `mode` (hostNetwork's own), then each mode key of the rule, then the deny list.
_HOST_NETWORK_KEYS = ("mode", *HOST_NETWORK_MODES[1:], "hostPaths")
_AUDIT_SCOPE_KEYS = ("mode", "policyFile", "minLevel", "namespaceSelector")


def _webhook_names(reader: _Reader, root: Mapping[str, Any]) -> tuple[str, ...]:
    if "webhookName" in root and "webhookNames" in root:
        raise ConfigError(
            reader.source, "webhookNames", "give webhookName or webhookNames, not both"
        )
    if "webhookNames" in root:
        names = reader.string_list(root["webhookNames"], "webhookNames")
        if not names:
            raise ConfigError(reader.source, "webhookNames", "must name at least one webhook")
        path = "webhookNames"
    else:
        names = (reader.string(root.get("webhookName", DEFAULT_WEBHOOK_NAME), "webhookName"),)
        path = "webhookName"
    for i, name in enumerate(names):
        where = path if path == "webhookName" else f"{path}[{i}]"
        if not is_qualified_webhook_name(name):
            raise ConfigError(
                reader.source,
                where,
                "must be a fully qualified name of three or more DNS labels "
                "(the API server refuses others), e.g. validate.kubefence.io",
            )
    return names


def parse_duration(text: str) -> float | None:
    """Seconds in a positive Go-style duration (`60s`, `1m30s`, `500ms`, `1h`); None if not one."""
    if not text or _DURATION.sub("", text) != "":
        return None
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    seconds = sum(float(n) * units[u] for n, u in _DURATION.findall(text))
    return seconds if seconds > 0 else None


def is_qualified_webhook_name(name: str) -> bool:
    """A ValidatingWebhookConfiguration webhook name: a DNS-1123 subdomain of ≥ 3 labels."""
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 3 and all(_DNS_LABEL.match(x) for x in labels)


def _audit_policy(
    reader: _Reader, scope: Mapping[str, Any], base_dir: Path, read_text: Callable[[Path], str]
) -> tuple[Policy | None, str | None, str]:
    raw = scope.get("policyFile")
    if raw is None:
        return None, None, ""
    relative = reader.string(raw, "auditScope.policyFile")
    path = base_dir / relative
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            reader.source, "auditScope.policyFile", f"cannot read {path}: {exc.__class__.__name__}"
        ) from None
    # As kube-apiserver reads it: unknown fields are dropped with a warning, not refused
    # (apiserver pkg/audit/policy/reader.go falls back from a strict to a lenient decode).
    return load_policy(text, str(path), strict=False), str(path), text


def _drift(reader: _Reader, raw: object) -> DriftSpec | None:
    """What the chart installed; kubefence watches the cluster for changes to it."""
    if raw is None:
        return None
    keys = ("webhookConfiguration", "admissionPolicy", "binding", "ignoreCABundle", "expected")
    doc = reader.mapping(raw, "drift", keys)
    if "webhookConfiguration" not in doc:
        raise ConfigError(reader.source, "drift.webhookConfiguration", "is required")
    expected = doc.get("expected", [])
    if not isinstance(expected, list) or not all(
        isinstance(w, dict) and w.get("name") for w in expected
    ):
        raise ConfigError(reader.source, "drift.expected", "must be a list of webhooks with names")
    injected = doc.get("ignoreCABundle", False)
    if not isinstance(injected, bool):
        raise ConfigError(reader.source, "drift.ignoreCABundle", "must be true or false")
    return DriftSpec(
        webhook_configuration=reader.string(
            doc["webhookConfiguration"], "drift.webhookConfiguration"
        ),
        expected=tuple(expected),
        admission_policy=reader.string(doc["admissionPolicy"], "drift.admissionPolicy")
        if doc.get("admissionPolicy")
        else "",
        binding=reader.string(doc["binding"], "drift.binding") if doc.get("binding") else "",
        ca_bundle_injected=injected,
    )


def _limits(reader: _Reader, raw: object, space: PeerSpace) -> Limits:
    """`limits:`: the cost bounds of NetworkPolicy analysis, each a positive integer; with them
    the peer space every analysis reads."""
    keys = {config_key: field for field, config_key in LIMIT_KEYS.items()}
    doc = reader.mapping(raw, "limits", tuple(keys))
    values = {keys[k]: reader.positive_int(v, f"limits.{k}") for k, v in doc.items()}
    return replace(DEFAULT_LIMITS, **values, peer_space=space)


def _peer_space(reader: _Reader, deny: Mapping[str, Any]) -> PeerSpace:
    """`defaultDeny.peerRanges`: the special ranges this cluster's network uses for Pods or
    Services (`webhook.reach.PEER_RANGES`); those it does not use hold no peer."""
    raw = deny.get("peerRanges", [])
    names = tuple(PEER_RANGES)
    path = "defaultDeny.peerRanges"
    if not isinstance(raw, list):
        raise reader.fail(path, f"must be a list of {', '.join(names)}")
    return peer_space(reader.choice(v, f"{path}[{i}]", names) for i, v in enumerate(raw))


def _exemptions(reader: _Reader, raw: object) -> Exemptions:
    doc = reader.mapping(raw, "exemptions", ("namespaces", "users", "groups"))
    defaults = Exemptions()
    return Exemptions(
        namespaces=frozenset(reader.string_list(doc["namespaces"], "exemptions.namespaces"))
        if "namespaces" in doc
        else defaults.namespaces,
        users=frozenset(reader.string_list(doc.get("users", []), "exemptions.users")),
        groups=frozenset(reader.string_list(doc.get("groups", []), "exemptions.groups")),
    )


def _overrides(reader: _Reader, raw: object) -> dict[str, dict[str, Mode]]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(reader.source, "overrides", "must be a list")
    result: dict[str, dict[str, Mode]] = {}
    for i, entry in enumerate(raw):
        path = f"overrides[{i}]"
        doc = reader.mapping(entry, path, ("namespaces", *MODE_KEYS))
        if "namespaces" not in doc:
            raise ConfigError(reader.source, f"{path}.namespaces", "is required")
        namespaces = reader.string_list(doc["namespaces"], f"{path}.namespaces")
        modes = {k: reader.mode(doc, path, k, Mode.OFF) for k in MODE_KEYS if k in doc}
        for namespace in namespaces:
            result.setdefault(namespace, modes)  # the first entry naming a namespace wins
    return result


class _Reader:
    """Typed field access that reports `source: path: reason` on the first wrong value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, reason: str) -> ConfigError:
        return ConfigError(self.source, path, reason)

    def mapping(self, raw: object, path: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail(path or "(top level)", "must be a mapping")
        for key in raw:
            if key not in keys:
                where = f"{path}.{key}" if path else str(key)
                raise self.fail(where, f"unknown key (expected one of: {', '.join(keys)})")
        return raw

    def string(self, raw: object, path: str) -> str:
        if not isinstance(raw, str) or not raw:
            raise self.fail(path, "must be a non-empty string")
        return raw

    def string_list(self, raw: object, path: str) -> tuple[str, ...]:
        if not isinstance(raw, list):
            raise self.fail(path, "must be a list of strings")
        return tuple(self.string(v, f"{path}[{i}]") for i, v in enumerate(raw))

    def absolute_paths(self, raw: object, path: str) -> tuple[str, ...]:
        """Absolute paths, normalised as `hostreach.normalise_path` reads a hostPath."""
        paths = self.string_list(raw, path)
        for i, value in enumerate(paths):
            if not value.startswith("/"):
                raise self.fail(f"{path}[{i}]", "must be an absolute path (starting with /)")
        return tuple(dict.fromkeys(normalise_path(p) for p in paths))

    def choice(self, raw: object, path: str, allowed: tuple[str, ...]) -> str:
        if raw not in allowed:
            raise self.fail(path, f"must be one of {', '.join(allowed)}")
        return str(raw)

    def mode(self, doc: Mapping[str, Any], base: str, key: str, default: Mode) -> Mode:
        if key not in doc:
            return default
        values = tuple(m.value for m in Mode)
        return Mode(self.choice(doc[key], f"{base}.{key}", values))

    def directions(self, raw: object, path: str) -> tuple[Direction, ...]:
        if not isinstance(raw, list):
            raise self.fail(path, "must be a list of Ingress, Egress")
        values = [
            Direction(self.choice(v, f"{path}[{i}]", ("Ingress", "Egress")))
            for i, v in enumerate(raw)
        ]
        return tuple(d for d in Direction if d in values)

    def level(self, raw: object, path: str) -> Level:
        names = tuple(level.wire for level in Level)
        return Level.parse(self.choice(raw, path, names))

    def selector(self, raw: object, path: str) -> LabelSelector:
        try:
            return parse_selector(raw)
        except SelectorError as exc:
            raise self.fail(f"{path}.{exc.path}".rstrip("."), exc.reason) from None

    def duration(self, raw: object, path: str) -> float:
        """A Go-style duration (`60s`, `1m30s`, `500ms`) or a number of seconds."""
        if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
            return float(raw)
        seconds = parse_duration(raw) if isinstance(raw, str) else None
        if seconds is None:
            raise self.fail(path, "must be a positive duration such as 60s, 2m or 1m30s")
        return seconds

    def positive_int(self, raw: object, path: str) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
            raise self.fail(path, "must be a positive integer")
        return raw
