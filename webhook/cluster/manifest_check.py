"""What the API server would refuse in a `--state` manifest: the first refused field, named.

A `--state` folder stands in for a cluster, so a manifest that could never have been created in
one (`policyTypes: Ingress`, a port of 70000, a peer that names no peer) is an error naming the
field, not something to read leniently. Namespaces, NetworkPolicies and Pods are checked as
kube-apiserver validates a create (`pkg/apis/networking/validation/validation.go`; the name,
label and selector rules of apimachinery), for the fields kubefence reads. The real API server is
the judge: tests/e2e/test_manifest_refusals.py dry-runs every fixture against it.

Invariants:
- Nothing the API server accepts is refused. Unknown fields pass (it drops them unless a client
  asks for strict field validation); `null` is absent for every optional field; a CIDR is read as
  ParseCIDRSloppy reads it, since objects stored by older API servers (and exported from them)
  may carry host bits or leading zeros that a create on 1.33 and later refuses.
- Pure: JSON-shaped data in, `field.path: reason` out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from webhook.netpol_read import parse_cidr_sloppy

KINDS = ("Namespace", "NetworkPolicy", "Pod")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_PORT_NAME = re.compile(r"[-a-z0-9]+")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_POLICY_TYPES = ("Ingress", "Egress")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class _Refused(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


def refusal(obj: Mapping[str, Any]) -> str | None:
    """`field.path: reason` for the first field the API server would refuse on create; None if
    it would accept the object (or it is of a kind kubefence does not read)."""
    kind = obj.get("kind")
    if kind not in KINDS:
        return None
    try:
        _metadata(obj.get("metadata"), namespaced=kind != "Namespace")
        if kind == "NetworkPolicy":
            _policy_spec(obj.get("spec"), "spec")
    except _Refused as exc:
        return str(exc)
    return None


# --- metadata -------------------------------------------------------------------------------


def _metadata(meta: object, *, namespaced: bool) -> None:
    if not isinstance(meta, Mapping):
        raise _Refused("metadata", "must be an object with a name")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise _Refused("metadata.name", "is required")
    if namespaced:
        _dns_subdomain(name, "metadata.name")
    else:
        _dns_label(name, "metadata.name")
    namespace = meta.get("namespace")
    if namespaced and namespace is not None:
        if not isinstance(namespace, str):
            raise _Refused("metadata.namespace", "must be a string")
        if namespace:
            _dns_label(namespace, "metadata.namespace")
    labels = meta.get("labels")
    if labels is not None:
        _labels(labels, "metadata.labels")


def _dns_label(value: str, path: str) -> None:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise _Refused(path, f"{value!r} is not a DNS label (a-z, 0-9, '-'; at most 63)")


def _dns_subdomain(value: str, path: str) -> None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise _Refused(path, f"{value!r} is not a DNS subdomain (a-z, 0-9, '-', '.'; at most 253)")


def _labels(labels: object, path: str) -> None:
    if not isinstance(labels, Mapping):
        raise _Refused(path, "must be a map of strings")
    for key, value in labels.items():
        _label_key(key, f"{path}[{key!r}]")
        if value is not None:  # null is ""
            _label_value(value, f"{path}[{key!r}]")


def _label_key(key: object, path: str) -> None:
    if not isinstance(key, str):
        raise _Refused(path, "a label key must be a string")
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise _Refused(path, f"{key!r}: the prefix before '/' must be a DNS subdomain")
    if "/" in prefix or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise _Refused(path, f"{key!r} is not a label key (alphanumerics, '-', '_', '.')")


def _label_value(value: object, path: str) -> None:
    if not isinstance(value, str):
        reason = f"must be a string, not a {_type(value)} (a bare yes, on or 1 is not: quote it)"
        raise _Refused(path, reason)
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise _Refused(path, f"{value!r} is not a label value (alphanumerics, '-', '_', '.')")


def _selector(raw: object, path: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        raise _Refused(path, "must be an object with matchLabels and/or matchExpressions")
    if raw.get("matchLabels") is not None:
        _labels(raw["matchLabels"], f"{path}.matchLabels")
    expressions = raw.get("matchExpressions")
    if expressions is None:
        return
    if not isinstance(expressions, list):
        raise _Refused(f"{path}.matchExpressions", "must be a list")
    for i, expr in enumerate(expressions):
        at = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise _Refused(at, "must be an object with key, operator and values")
        operator, values = expr.get("operator"), expr.get("values")
        if operator not in _OPERATORS:
            raise _Refused(f"{at}.operator", f"must be one of {', '.join(_OPERATORS)}")
        if values is not None and not isinstance(values, list):
            raise _Refused(f"{at}.values", "must be a list of strings")
        if operator in ("In", "NotIn") and not values:
            raise _Refused(f"{at}.values", f"must be non-empty for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise _Refused(f"{at}.values", f"must be empty for operator {operator}")
        _label_key(expr.get("key"), f"{at}.key")
        for j, value in enumerate(values or ()):
            _label_value(value, f"{at}.values[{j}]")


# --- NetworkPolicy --------------------------------------------------------------------------


def _policy_spec(spec: object, path: str) -> None:
    if spec is None:
        return
    if not isinstance(spec, Mapping):
        raise _Refused(path, "must be an object")
    _selector(spec.get("podSelector"), f"{path}.podSelector")
    for key, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = _list(spec.get(key), f"{path}.{key}", "a list of rules")
        for i, rule in enumerate(rules):
            _rule(rule, f"{path}.{key}[{i}]", peers_key)
    types = spec.get("policyTypes")
    if types is None:
        return
    if not isinstance(types, list):
        reason = f"must be a list, e.g. [{types}], not a {_type(types)}"
        raise _Refused(f"{path}.policyTypes", reason)
    if len(types) > len(_POLICY_TYPES):
        raise _Refused(f"{path}.policyTypes", "may not specify more than two policyTypes")
    for i, kind in enumerate(types):
        if kind not in _POLICY_TYPES:
            raise _Refused(f"{path}.policyTypes[{i}]", f"must be Ingress or Egress, not {kind!r}")


def _list(raw: object, path: str, what: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _Refused(path, f"must be {what}, not a {_type(raw)}")
    return raw


def _rule(rule: object, path: str, peers_key: str) -> None:
    if rule is None:  # a null rule decodes as {}
        return
    if not isinstance(rule, Mapping):
        raise _Refused(path, "must be an object with ports and " + peers_key)
    for i, port in enumerate(_list(rule.get("ports"), f"{path}.ports", "a list of ports")):
        _port(port, f"{path}.ports[{i}]")
    for i, peer in enumerate(_list(rule.get(peers_key), f"{path}.{peers_key}", "a list of peers")):
        _peer(peer, f"{path}.{peers_key}[{i}]")


def _port(entry: object, path: str) -> None:
    if entry is None:
        return
    if not isinstance(entry, Mapping):
        raise _Refused(path, "must be an object with protocol, port and endPort")
    protocol = entry.get("protocol")
    if protocol is not None and protocol not in _PROTOCOLS:
        raise _Refused(f"{path}.protocol", f"must be one of {', '.join(_PROTOCOLS)}")
    port, end = entry.get("port"), entry.get("endPort")
    if end is not None and not _is_int(end):
        raise _Refused(f"{path}.endPort", "must be a port number")
    if port is None:
        if end is not None:
            raise _Refused(f"{path}.endPort", "may not be given without port")
        return
    if _is_int(port):
        _port_number(port, f"{path}.port")
        if end is not None:
            if end < port:
                raise _Refused(f"{path}.endPort", f"{end} is less than port {port}")
            _port_number(end, f"{path}.endPort")
        return
    if not isinstance(port, str):
        raise _Refused(f"{path}.port", "must be a port number or a port name")
    if end is not None:
        raise _Refused(f"{path}.endPort", "may not be given with a named port")
    if (
        len(port) > 15
        or not _PORT_NAME.fullmatch(port)
        or not re.search("[a-z]", port)
        or "--" in port
        or port.startswith("-")
        or port.endswith("-")
    ):
        raise _Refused(f"{path}.port", f"{port!r} is not a port name (a number is written bare)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _port_number(value: int, path: str) -> None:
    if not 1 <= value <= 65535:
        raise _Refused(path, f"{value} is not a port number (1 to 65535)")


def _peer(peer: object, path: str) -> None:
    if peer is not None and not isinstance(peer, Mapping):
        raise _Refused(path, "must be an object with podSelector, namespaceSelector or ipBlock")
    peer = peer or {}
    given = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not given:
        raise _Refused(path, "must name a peer: podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in given and len(given) > 1:
        raise _Refused(path, "may not give both ipBlock and another peer")
    for key in ("podSelector", "namespaceSelector"):
        _selector(peer.get(key), f"{path}.{key}")
    if "ipBlock" in given:
        _ip_block(peer["ipBlock"], f"{path}.ipBlock")


def _ip_block(block: object, path: str) -> None:
    if not isinstance(block, Mapping):
        raise _Refused(path, "must be an object with cidr and except")
    cidr = block.get("cidr")
    if cidr is None or cidr == "":
        raise _Refused(f"{path}.cidr", "is required")
    network = parse_cidr_sloppy(cidr) if isinstance(cidr, str) else None
    if network is None:
        raise _Refused(f"{path}.cidr", f"{cidr!r} is not a CIDR such as 10.0.0.0/8")
    for i, raw in enumerate(_list(block.get("except"), f"{path}.except", "a list of CIDRs")):
        hole = parse_cidr_sloppy(raw)
        if hole is None:
            raise _Refused(f"{path}.except[{i}]", f"{raw!r} is not a CIDR such as 10.1.0.0/16")
        if (
            hole.version != network.version
            or not hole.subnet_of(network)  # type: ignore[arg-type]  # same version: checked
            or hole.prefixlen <= network.prefixlen
        ):
            raise _Refused(f"{path}.except[{i}]", f"{raw!r} is not a strict subset of {cidr!r}")


def _type(value: object) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list"}
    return names.get(type(value), "mapping" if isinstance(value, Mapping) else "value")
