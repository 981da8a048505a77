"""The AdmissionReview wire format (admission.k8s.io/v1, v1beta1): bytes in, frozen request out.

`parse_review` accepts exactly what kube-apiserver sends and raises `ReviewError` (HTTP 400) with a
one-line reason for anything else; `render_response` builds the answer in the version asked,
echoing `request.uid`. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.errors import ReviewError

API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str

    def __str__(self) -> str:
        return f"{self.group}/{self.version}/{self.kind}"


@dataclass(frozen=True, slots=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """One admission request, as decided. `object`/`old_object` are the raw JSON maps."""

    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: str
    user: UserInfo
    namespace: str = ""
    name: str = ""
    sub_resource: str = ""
    request_resource: GroupVersionResource | None = None
    request_sub_resource: str = ""
    object: Mapping[str, Any] | None = None
    old_object: Mapping[str, Any] | None = None
    dry_run: bool = False
    api_version: str = "admission.k8s.io/v1"

    @property
    def url_resource(self) -> GroupVersionResource:
        """The resource as the client's URL named it, before version conversion."""
        return self.request_resource or self.resource

    @property
    def url_sub_resource(self) -> str:
        return self.request_sub_resource if self.request_resource else self.sub_resource

    @property
    def target(self) -> Mapping[str, Any] | None:
        """The object the operation is about: `oldObject` for DELETE, else `object`."""
        return self.old_object if self.operation == "DELETE" else self.object


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse an AdmissionReview body; raise ReviewError with a one-line reason when malformed."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 and nesting deeper than 1024 levels here.
        raise ReviewError(f"body is not valid JSON: {_first_line(str(exc))}") from None
    if not isinstance(doc, dict):
        raise ReviewError("body must be a JSON object (an AdmissionReview)")
    if doc.get("kind") != "AdmissionReview":
        raise ReviewError("kind must be AdmissionReview")
    api_version = doc.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise ReviewError("apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request must be an object")
    return _parse_request(request, str(api_version))


def _parse_request(req: dict[str, Any], api_version: str) -> AdmissionRequest:
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid must be a non-empty string")
    operation = req.get("operation")
    if operation not in OPERATIONS:
        raise ReviewError("request.operation must be one of CREATE, UPDATE, DELETE, CONNECT")
    request_resource = req.get("requestResource")
    return AdmissionRequest(
        uid=uid,
        kind=_gvk(req.get("kind"), "request.kind"),
        resource=_gvr(req.get("resource"), "request.resource"),
        operation=str(operation),
        user=_user(req.get("userInfo")),
        namespace=_opt_str(req, "namespace"),
        name=_opt_str(req, "name"),
        sub_resource=_opt_str(req, "subResource"),
        request_resource=(
            None if request_resource is None else _gvr(request_resource, "request.requestResource")
        ),
        request_sub_resource=_opt_str(req, "requestSubResource"),
        object=_opt_object(req, "object"),
        old_object=_opt_object(req, "oldObject"),
        dry_run=_opt_bool(req, "dryRun"),
        api_version=api_version,
    )


# The few kinds and resources the API server sends, each built once: a dict of them replaces the
# validation and the frozen dataclass of every request (equal values, so sharing is invisible).
# Bounded (a hostile client could send many): emptied when full.
INTERN_LIMIT = 1024
_INTERNED: dict[tuple[str, str, str, str], GroupVersionKind | GroupVersionResource] = {}


def _interned(raw: object, last: str) -> GroupVersionKind | GroupVersionResource | None:
    """The interned GVK (`last` "kind") or GVR ("resource") of a well-formed `raw`, else None."""
    if type(raw) is not dict:
        return None
    group, version, name = raw.get("group", ""), raw.get("version", ""), raw.get(last, "")
    if type(group) is not str or type(version) is not str or type(name) is not str or not name:
        return None  # the validating path below says what is wrong
    key = (last, group, version, name)
    value = _INTERNED.get(key)
    if value is None:
        if len(_INTERNED) >= INTERN_LIMIT:
            _INTERNED.clear()
        value = _INTERNED[key] = (
            GroupVersionKind(group, version, name)
            if last == "kind"
            else GroupVersionResource(group, version, name)
        )
    return value


def _gvk(raw: object, where: str) -> GroupVersionKind:
    interned = _interned(raw, "kind")
    if isinstance(interned, GroupVersionKind):
        return interned
    fields = _strings(raw, where, ("group", "version", "kind"))
    if not fields[2]:
        raise ReviewError(f"{where}.kind must be a non-empty string")
    return GroupVersionKind(*fields)


def _gvr(raw: object, where: str) -> GroupVersionResource:
    interned = _interned(raw, "resource")
    if isinstance(interned, GroupVersionResource):
        return interned
    fields = _strings(raw, where, ("group", "version", "resource"))
    if not fields[2]:
        raise ReviewError(f"{where}.resource must be a non-empty string")
    return GroupVersionResource(*fields)


def _strings(raw: object, where: str, keys: Sequence[str]) -> tuple[str, str, str]:
    if not isinstance(raw, dict):
        raise ReviewError(f"{where} must be an object")
    values = []
    for key in keys:
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise ReviewError(f"{where}.{key} must be a string")
        values.append(value)
    return values[0], values[1], values[2]


def _user(raw: object) -> UserInfo:
    if not isinstance(raw, dict):
        raise ReviewError("request.userInfo must be an object")
    username = raw.get("username", "")
    if not isinstance(username, str):
        raise ReviewError("request.userInfo.username must be a string")
    groups = raw.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ReviewError("request.userInfo.groups must be a list of strings")
    return UserInfo(username, tuple(groups))


def _opt_str(req: Mapping[str, Any], key: str) -> str:
    value = req.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"request.{key} must be a string")
    return value


def _opt_bool(req: Mapping[str, Any], key: str) -> bool:
    value = req.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ReviewError(f"request.{key} must be a boolean")
    return value


def _opt_object(req: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = req.get(key)
    if value is not None and not isinstance(value, dict):
        raise ReviewError(f"request.{key} must be an object or null")
    return value


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else "malformed"


@dataclass(frozen=True, slots=True)
class AdmissionResponse:
    """What goes back: allowed or not, why, warnings and audit annotations."""

    uid: str
    allowed: bool
    message: str = ""
    code: int = 403
    warnings: tuple[str, ...] = ()
    audit_annotations: Mapping[str, str] | None = None


def render_response(response: AdmissionResponse, api_version: str) -> bytes:
    """The AdmissionReview JSON for a response, in the API version the request used."""
    body: dict[str, Any] = {"uid": response.uid, "allowed": response.allowed}
    if not response.allowed:
        body["status"] = {
            "code": response.code,
            "reason": "Forbidden",
            "message": response.message,
        }
    if response.warnings:
        body["warnings"] = list(response.warnings)
    if response.audit_annotations:
        body["auditAnnotations"] = dict(response.audit_annotations)
    review = {"apiVersion": api_version, "kind": "AdmissionReview", "response": body}
    return orjson.dumps(review)
