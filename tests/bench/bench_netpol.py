"""NetworkPolicy analysis cost (issue 16): CPU time of the two hostile policies, a realistic
30-rule policy, the worst policies the default limits allow, and `fence_for` over a namespace of
200 policies.

Run as `python tests/bench/bench_netpol.py` from a worktree (PYTHONPATH=<worktree>). It also runs
against code that has no limits yet (the numbers before): `--skip-hostile` leaves out the two
hostile policies there, which take about a minute each. Prints numbers, asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from webhook import netpol

HAS_LIMITS = hasattr(netpol, "Limits")
# The defaults' numbers, for code that has none (keep equal to webhook.netpol_limits.Limits).
FALLBACK = {
    "max_rules_per_policy": 256,
    "max_peers_per_rule": 256,
    "max_ports_per_rule": 256,
    "max_excepts_per_block": 256,
    "max_entries_per_policy": 4096,
    "max_policies_per_namespace": 500,
    "max_entries_per_namespace": 8192,
}
LIMITS: dict[str, int] = (
    {  # the bounds only: Limits also carries the peer space, which is no count
        k: v
        for k, v in dataclasses.asdict(netpol.DEFAULT_LIMITS).items()  # type: ignore[attr-defined]
        if k.startswith("max_")
    }
    if HAS_LIMITS
    else dict(FALLBACK)
)


def policy(name: str, spec: dict[str, Any], namespace: str = "team") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": spec,
    }


def scattered_v4(rng: random.Random, count: int) -> list[str]:
    return [
        f"{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}/32"
        for _ in range(count)
    ]


def hostile_excepts() -> dict[str, Any]:
    """`0.0.0.0/0` with 20,000 scattered /32 excepts (about 400 KB)."""
    holes = scattered_v4(random.Random(1), 20_000)
    block = {"ipBlock": {"cidr": "0.0.0.0/0", "except": holes}}
    return policy("hostile-excepts", {"podSelector": {}, "ingress": [{"from": [block]}]})


def hostile_rules() -> dict[str, Any]:
    """8,000 rules x 5 ipBlocks (about 1.7 MB)."""
    rng = random.Random(2)
    rules = [
        {
            "from": [
                {
                    "ipBlock": {
                        "cidr": f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
                    }
                }
                for _ in range(5)
            ]
        }
        for _ in range(8_000)
    ]
    return policy("hostile-rules", {"podSelector": {}, "ingress": rules})


def realistic(
    name: str = "web", selector: dict[str, Any] | None = None, seed: int = 3
) -> dict[str, Any]:
    """30 rules of the shapes teams write: namespace and pod selectors, ports, a few ipBlocks."""
    rng = random.Random(seed)
    ingress: list[dict[str, Any]] = []
    for i in range(15):
        peer: dict[str, Any] = rng.choice(
            [
                {"podSelector": {"matchLabels": {"app": f"client-{i}"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"ns-{i}"}}},
                {
                    "namespaceSelector": {"matchLabels": {"team": "platform"}},
                    "podSelector": {
                        "matchExpressions": [
                            {"key": "tier", "operator": "In", "values": ["a", "b"]}
                        ]
                    },
                },
                {"ipBlock": {"cidr": f"10.{i}.0.0/16", "except": [f"10.{i}.1.0/24"]}},
            ]
        )
        ports = [
            {"protocol": "TCP", "port": 8000 + i},
            {"protocol": "TCP", "port": 9000 + i, "endPort": 9010 + i},
        ]
        ingress.append(
            {"from": [peer, {"podSelector": {"matchLabels": {"role": "monitor"}}}], "ports": ports}
        )
    egress: list[dict[str, Any]] = [
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                    },
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
    ]
    for i in range(14):
        egress.append(
            {
                "to": [
                    {"ipBlock": {"cidr": f"172.16.{i}.0/24"}},
                    {"podSelector": {"matchLabels": {"app": f"db-{i}"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 5432 + i}],
            }
        )
    spec = {
        "podSelector": selector if selector is not None else {"matchLabels": {"app": name}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": ingress,
        "egress": egress,
    }
    return policy(name, spec)


def worst_allowed() -> dict[str, dict[str, Any]]:
    """Policies at the default limits shaped to make the joint sweep work hardest.

    Every shape keeps `entries` (ports x (1 + ipBlocks + excepts), summed over rules) at the limit
    and makes the union of addresses nearly everything, so no shortcut applies.
    """
    entries = LIMITS["max_entries_per_policy"]
    excepts = LIMITS["max_excepts_per_block"]
    ports = LIMITS["max_ports_per_rule"]
    rng = random.Random(4)
    shapes: dict[str, dict[str, Any]] = {}

    # One port per rule, each rule 0.0.0.0/0 with a full list of scattered excepts.
    per_rule = 2 + excepts
    rules = [
        {
            "from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": scattered_v4(rng, excepts)}}],
            "ports": [{"port": 2 * i + 1}],
        }
        for i in range(max(1, entries // per_rule))
    ]
    shapes["one port x 256 excepts per rule"] = policy(
        "worst-a", {"podSelector": {}, "ingress": rules}
    )

    # One rule with every port entry distinct, the addresses split into as many ranges as fit.
    holes = max(0, entries // ports - 2)
    rule = {
        "from": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": scattered_v4(rng, min(holes, excepts))}}
        ],
        "ports": [{"port": 2 * i + 1} for i in range(ports)],
    }
    shapes["256 ports x excepts in one rule"] = policy(
        "worst-b", {"podSelector": {}, "ingress": [rule]}
    )

    # The same with IPv6 (big integers): ::/0 less scattered /128s, one port per rule.
    rules = [
        {
            "from": [
                {
                    "ipBlock": {
                        "cidr": "::/0",
                        "except": [
                            f"2001:db8::{rng.randrange(1, 2**16):x}:{rng.randrange(2**16):x}/128"
                            for _ in range(excepts)
                        ],
                    }
                }
            ],
            "ports": [{"port": 2 * i + 1}],
        }
        for i in range(max(1, entries // per_rule))
    ]
    shapes["IPv6: one port x 256 excepts per rule"] = policy(
        "worst-c", {"podSelector": {}, "ingress": rules}
    )

    # No ports (every protocol), as many blocks with excepts as fit: parsing and merging.
    blocks = max(1, (entries - 1) // (1 + excepts))
    rule = {
        "from": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": scattered_v4(rng, excepts)}}
            for _ in range(blocks)
        ]
    }
    shapes["no ports, blocks x 256 excepts"] = policy(
        "worst-d", {"podSelector": {}, "ingress": [rule]}
    )

    # Every rule on its own port range, halves of the address space that pool across rules.
    rules = []
    for i in range(min(LIMITS["max_rules_per_policy"], entries // 3)):
        half = "0.0.0.0/1" if i % 2 else "128.0.0.0/1"
        rules.append(
            {
                "from": [{"ipBlock": {"cidr": half}}],
                "ports": [{"port": 1 + 200 * (i // 2), "endPort": 200 + 200 * (i // 2)}],
            }
        )
    shapes["256 rules, halves pooled on port ranges"] = policy(
        "worst-e", {"podSelector": {}, "ingress": rules}
    )

    # Rules open on nested port ranges, each a partition of IPv4 into blocks riddled with excepts:
    # every segment has several nearly-full openings, so only the coverage tree can decide.
    for count in (2, 4, 8):
        per = entries // count
        blocks = max(1, (per - 1) // (1 + excepts))
        rules = []
        for i in range(count):
            rule_blocks = []
            for cidr in _partition(blocks):
                base, bits = cidr.split("/")
                start = _number(base)
                span = 2 ** (32 - int(bits))
                rule_blocks.append(
                    {
                        "ipBlock": {
                            "cidr": cidr,
                            "except": [
                                f"{_dotted(start + rng.randrange(span))}/32" for _ in range(excepts)
                            ],
                        }
                    }
                )
            rules.append({"from": rule_blocks, "ports": [{"port": 1 + i, "endPort": 65535 - i}]})
        shapes[f"{count} rules on nested ports, {blocks} blocks x 256 excepts"] = policy(
            f"worst-f{count}", {"podSelector": {}, "ingress": rules}
        )

    # The nested shape in IPv6 (big integers): a partition of IPv6 riddled with /128 excepts.
    per = entries // 2
    blocks = max(1, (per - 1) // (1 + excepts))
    rules = []
    for i in range(2):
        rule_blocks = []
        for start, bits in _partition6(blocks):
            holes = [f"{_v6(start + rng.randrange(2 ** (128 - bits)))}/128" for _ in range(excepts)]
            rule_blocks.append({"ipBlock": {"cidr": f"{_v6(start)}/{bits}", "except": holes}})
        rules.append({"from": rule_blocks, "ports": [{"port": 1 + i, "endPort": 65535 - i}]})
    shapes[f"IPv6: 2 rules on nested ports, {blocks} blocks x 256 excepts"] = policy(
        "worst-h", {"podSelector": {}, "ingress": rules}
    )

    # One rule toggling on many port ranges over another that spans them all.
    rule_ports = min(ports, entries // (2 * (2 + excepts)))
    toggler = {
        "from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": scattered_v4(rng, excepts)}}],
        "ports": [{"port": 2 * i + 1} for i in range(rule_ports)],
    }
    spanner = {
        "from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": scattered_v4(rng, excepts)}}],
        "ports": [{"port": 1, "endPort": 65534}],
    }
    shapes[f"{rule_ports} toggled ports over a spanning rule"] = policy(
        "worst-g", {"podSelector": {}, "ingress": [toggler, spanner]}
    )
    return shapes


def _partition(blocks: int) -> list[str]:
    """`blocks` CIDRs that together are exactly 0.0.0.0/0: halves, quarters, ... and the rest."""
    if blocks <= 1:
        return ["0.0.0.0/0"]
    halving = [f"{_dotted(2**32 - 2 ** (33 - n))}/{n}" for n in range(1, blocks)]
    return [*halving, f"{_dotted(2**32 - 2 ** (33 - blocks))}/{blocks - 1}"]


def _partition6(blocks: int) -> list[tuple[int, int]]:
    """(first address, prefix) of `blocks` IPv6 CIDRs that together are ::/0."""
    if blocks <= 1:
        return [(0, 0)]
    halving = [(2**128 - 2 ** (129 - n), n) for n in range(1, blocks)]
    return [*halving, (2**128 - 2 ** (129 - blocks), blocks - 1)]


def _v6(number: int) -> str:
    return ":".join(f"{number >> shift & 0xFFFF:x}" for shift in range(112, -1, -16))


def _dotted(number: int) -> str:
    return ".".join(str(number >> shift & 255) for shift in (24, 16, 8, 0))


def _number(dotted: str) -> int:
    a, b, c, d = (int(x) for x in dotted.split("."))
    return a << 24 | b << 16 | c << 8 | d


def cpu(fn: Callable[[], object], repeat: int = 1) -> float:
    """CPU seconds of one call (the best of `repeat`)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def analyse(obj: dict[str, Any], raised: bool = False) -> Any:
    if not HAS_LIMITS:
        return netpol.analyse_policy(obj)
    limits = netpol.Limits(**dict.fromkeys(LIMITS, 10**9)) if raised else netpol.DEFAULT_LIMITS  # type: ignore[attr-defined]
    return netpol.analyse_policy(obj, limits)  # type: ignore[call-arg]


def show(label: str, seconds: float, note: str = "") -> None:
    print(f"  {label:<52} {seconds * 1000:10.2f} ms{('  ' + note) if note else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--skip-hostile", action="store_true", help="leave out the two hostile policies"
    )
    args = parser.parse_args()
    print(f"code: {netpol.__file__} ({'with' if HAS_LIMITS else 'without'} limits)")
    print(f"limits: {LIMITS}")

    print("hostile policies")
    for make in (hostile_excepts, hostile_rules):
        obj = make()
        kib = len(orjson.dumps(obj)) / 1024
        name = obj["metadata"]["name"]
        if HAS_LIMITS:
            facts = analyse(obj)
            show(
                f"{name} ({kib:.0f} KiB), default limits",
                cpu(lambda obj=obj: analyse(obj), 3),
                f"refused: {facts.refused!r}",
            )
            show(f"{name}, limits raised", cpu(lambda obj=obj: analyse(obj, raised=True)))
        elif not args.skip_hostile:
            show(f"{name} ({kib:.0f} KiB), no limits", cpu(lambda obj=obj: analyse(obj)))
        else:
            print(f"  {name}: skipped")

    print("realistic")
    web = realistic()
    show("30-rule policy, analyse_policy", cpu(lambda: analyse(web), 20))

    print("worst policies the default limits allow")
    for label, obj in worst_allowed().items():
        facts = analyse(obj)
        refused = getattr(facts, "refused", "")
        size = getattr(facts, "size", None)
        show(
            label,
            cpu(lambda obj=obj: analyse(obj), 3),
            f"refused: {refused!r}" if refused else f"size {tuple(size) if size else '?'}",
        )

    print("fence_for over a namespace of 200 policies (default limits; raised, when over them)")
    for label, objs in namespaces().items():
        facts = [analyse(o) for o in objs]
        raised = [analyse(o, raised=True) for o in objs]
        total = sum(getattr(f, "size", (0,) * 5)[4] for f in facts)
        for direction in netpol.DIRECTIONS:
            fence = netpol.fence_for(facts, direction)
            over = getattr(fence, "over_limit", "")
            show(
                f"{label}, {direction.value}",
                cpu(lambda d=direction, facts=facts: netpol.fence_for(facts, d), 5),
                f"entries {total}; neutralised={fence.neutralised}"
                + (f" ({over})" if over else ""),
            )
            if over:
                high = netpol.Limits(**dict.fromkeys(LIMITS, 10**9))  # type: ignore[attr-defined]
                lifted = netpol.fence_for(raised, direction, limits=high)  # type: ignore[call-arg]
                show(
                    f"{label}, {direction.value}, limits raised",
                    cpu(
                        lambda d=direction, f=raised, h=high: netpol.fence_for(f, d, limits=h),  # type: ignore[call-arg]
                        5,
                    ),
                    f"neutralised={lifted.neutralised}",
                )
        show(f"{label}, analyse all 200", cpu(lambda objs=objs: [analyse(o) for o in objs]))
        if hasattr(netpol, "opens_selected_to_everyone"):
            subject = facts[-1]
            show(
                f"{label}, opens_selected_to_everyone (one subject)",
                cpu(
                    lambda subject=subject, facts=facts: netpol.opens_selected_to_everyone(
                        subject, facts, netpol.Direction.INGRESS
                    ),
                    5,
                ),
            )

    print("fence_for over the worst namespace the default limits allow")
    objs = worst_namespace()
    facts = [analyse(o) for o in objs]
    fence = netpol.fence_for(facts, netpol.Direction.INGRESS)
    show(
        f"{len(objs)} all-pods policies at the namespace's entry limit",
        cpu(lambda: netpol.fence_for(facts, netpol.Direction.INGRESS), 3),
        f"entries {sum(getattr(f, 'size', (0,) * 5)[4] for f in facts)}; "
        f"neutralised={fence.neutralised} {getattr(fence, 'over_limit', '')}",
    )
    return 0


def worst_namespace() -> list[dict[str, Any]]:
    """Policies for all pods whose entries fill the namespace's limit, each on its own port
    ranges over a partition of IPv4 riddled with excepts: the pooled sweep at its largest."""
    rng = random.Random(5)
    excepts = LIMITS["max_excepts_per_block"]
    per_policy = min(LIMITS["max_entries_per_policy"], LIMITS["max_entries_per_namespace"] // 2)
    count = max(1, LIMITS["max_entries_per_namespace"] // per_policy)
    blocks = max(1, (per_policy - 1) // (1 + excepts))
    out = []
    for i in range(count):
        rule_blocks = []
        for cidr in _partition(blocks):
            base, bits = cidr.split("/")
            span = 2 ** (32 - int(bits))
            holes = [f"{_dotted(_number(base) + rng.randrange(span))}/32" for _ in range(excepts)]
            rule_blocks.append({"ipBlock": {"cidr": cidr, "except": holes}})
        rule = {"from": rule_blocks, "ports": [{"port": 1 + i, "endPort": 65535 - i}]}
        out.append(policy(f"wide-{i}", {"podSelector": {}, "ingress": [rule]}))
    return out


def namespaces() -> dict[str, list[dict[str, Any]]]:
    """A team namespace: five policies for all pods, 195 per-app ones; and 200 all-pods ones."""
    common = [
        policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        policy(
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                }
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            },
        ),
        policy(
            "allow-ingress-controller",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                                }
                            }
                        ],
                        "ports": [{"port": 8080}],
                    }
                ],
            },
        ),
        policy(
            "allow-monitoring",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                                }
                            }
                        ],
                        "ports": [{"port": "metrics"}],
                    }
                ],
            },
        ),
        policy(
            "allow-egress-internet",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "ipBlock": {
                                    "cidr": "0.0.0.0/0",
                                    "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                                }
                            }
                        ],
                        "ports": [{"port": 443}],
                    }
                ],
            },
        ),
    ]
    apps = [realistic(f"app-{i}", seed=i) for i in range(195)]
    all_pods = [realistic(f"shared-{i}", selector={}, seed=i) for i in range(200)]
    return {
        "team namespace (5 all-pods + 195 per-app)": common + apps,
        "200 all-pods 30-rule policies": all_pods,
    }


if __name__ == "__main__":
    sys.exit(main())
