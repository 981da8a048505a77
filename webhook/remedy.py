"""What fixes an unfenced namespace: the one text both a denial and `kubefence scan --fix` give.

A direction that no policy isolates is fixed by adding a default-deny NetworkPolicy, under a name
the namespace does not use yet (applying a manifest named like an existing policy would replace
it, and could drop the fence it already has). A direction whose fence is neutralised is not fixed
by another default-deny (policies are additive): the policies that open it must be narrowed or
deleted. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from webhook.netpol import Direction

POLICY_NAME = "kubefence-default-deny"


@dataclass(frozen=True, slots=True)
class Remedy:
    namespace: str
    add: tuple[Direction, ...]  # isolated by applying `manifest`
    manifest: str  # "" when every missing direction is isolated already
    narrow: Mapping[Direction, tuple[str, ...]]  # opened to every peer: the policies to narrow

    def narrowing(self) -> list[str]:
        """One sentence per opened direction: which policies to narrow or delete."""
        lines = []
        for direction, names in self.narrow.items():
            them = "it" if len(names) == 1 else "them"
            if direction in self.add:
                lines.append(
                    f"Its {direction} is also opened to every peer by NetworkPolicy "
                    f"{', '.join(names)}: narrow or delete {them}, or the default-deny below "
                    "will not fence it."
                )
            else:
                lines.append(
                    f"Its {direction} default-deny is neutralised by NetworkPolicy "
                    f"{', '.join(names)}, which lets every peer in: narrow or delete {them} "
                    "(a new default-deny does not help)."
                )
        return lines

    def steps(self) -> list[str]:
        """The remedy as lines of text: what to narrow, then what to apply."""
        lines = self.narrowing()
        if self.manifest:
            lines.append("Apply this NetworkPolicy (then allow the traffic the workload needs):")
            lines.append(self.manifest)
        return lines


def remedy(
    namespace: str,
    missing: Sequence[Direction],
    neutralised: Mapping[Direction, tuple[str, ...]],
    taken: Collection[str],
    isolated: Collection[Direction] = (),
) -> Remedy:
    """The fix for `missing` directions: a default-deny for those no policy isolates, and the
    policies to narrow for those opened to every peer (`neutralised`); `taken`: names in use."""
    add = tuple(d for d in missing if d not in isolated)
    narrow = {d: names for d, names in neutralised.items() if d in missing}
    manifest = default_deny_manifest(namespace, add, free_name(taken)) if add else ""
    return Remedy(namespace, add, manifest, narrow)


def free_name(taken: Collection[str]) -> str:
    """`kubefence-default-deny`, or the first `kubefence-default-deny-N` not in `taken`."""
    if POLICY_NAME not in taken:
        return POLICY_NAME
    n = 2
    while f"{POLICY_NAME}-{n}" in taken:
        n += 1
    return f"{POLICY_NAME}-{n}"


def default_deny_manifest(namespace: str, directions: Sequence[Direction], name: str) -> str:
    """The minimal default-deny NetworkPolicy that fences `directions`, as YAML."""
    types = ", ".join(d.value for d in directions)
    return (
        "apiVersion: networking.k8s.io/v1\n"
        "kind: NetworkPolicy\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: {namespace}\n"
        "spec:\n"
        "  podSelector: {}\n"
        f"  policyTypes: [{types}]"
    )
