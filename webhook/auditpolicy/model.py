"""The audit Policy's data: levels, stages, a rule as written, a request's attributes, an answer.

Every type is immutable. `Level` orders as kube-apiserver does (None < Metadata < Request <
RequestResponse); a `PolicyRule` holds only its own fields, never the policy-level defaults.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Level(enum.IntEnum):
    """Audit levels in kube-apiserver's order: None < Metadata < Request < RequestResponse."""

    NONE = 0
    METADATA = 1
    REQUEST = 2
    REQUEST_RESPONSE = 3

    @property
    def wire(self) -> str:
        return _LEVEL_NAMES[self]

    @classmethod
    def parse(cls, text: str) -> Level:
        try:
            return cls(_LEVEL_NAMES.index(text))
        except ValueError:
            raise ValueError(
                f"unsupported level {text!r}: supported values: {_LEVELS_HINT}"
            ) from None


_LEVEL_NAMES: Final = ("None", "Metadata", "Request", "RequestResponse")
_LEVELS_HINT: Final = ", ".join(f'"{name}"' for name in _LEVEL_NAMES)
STAGES: Final = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
API_VERSIONS: Final = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What kube-apiserver's audit filter knows about a request (authorizer.Attributes)."""

    user: str | None  # None = unauthenticated (matches no users/userGroups rule)
    groups: tuple[str, ...] = ()
    verb: str = ""
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Evaluation:
    level: Level
    rule: int | None  # 0-based index of the matching rule, None when none matched
    omit_stages: frozenset[str]
    omit_managed_fields: bool


@dataclass(frozen=True, slots=True)
class GroupResources:
    group: str = ""  # "" = core group, "*" = every group (kube-apiserver >= 1.36)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule as written; `omit_stages` is the rule's own list, without the policy's."""

    level: Level
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool | None = None
