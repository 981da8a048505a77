"""`kubefence scan`: the preflight. What the webhook would object to in a live cluster or manifests.

The I/O shell around `webhook.scan`: reads the cluster once (a paginated LIST of Namespaces,
NetworkPolicies and running Pods, raw JSON through orjson, the served API groups, and
Services, ClusterRoles, ClusterRoleBindings and the workload kinds whose templates make Pods: a
403 on one of those is said in the report instead of failing the scan) or a `--state` folder,
and prints a table, JSON, or with `--fix` the YAML that fences every unfenced namespace.

Exit status, the enforce gate: 1 when `mode: enforce` would deny a request this cluster sends on
its own (a workload's next Pod, a Deployment's next ReplicaSet, a CronJob's next Job: the
report's `would_deny`) or a list of workloads was forbidden (fail closed), else 0; `--strict`
makes the advisory findings exit 1 too. `--fix` exits 0 once it printed its manifests, so `scan
--fix | kubectl apply -f -` passes under pipefail; it names what it does not fix on stderr. 2 for
bad input or an unreachable cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from webhook import exitcodes
from webhook.cluster.apiserver import JSON, RUNNING_PODS, ApiError, Getter, pages
from webhook.cluster.kubeconfig import Kubeconfig
from webhook.cluster.static import build_facts, load_state, objects_of
from webhook.cluster.view import StaticView
from webhook.commands.cluster_flags import (
    add_cluster_arguments,
    add_format_argument,
    add_namespace_argument,
    cluster_credentials,
    credentials_error,
    in_namespace,
    namespaced_path,
)
from webhook.config import load_settings
from webhook.errors import InputError
from webhook.findings.exposure import KINDS as EXPOSURE_KINDS
from webhook.findings.exposure import Exposure, read_exposure
from webhook.findings.host import WORKLOAD_KINDS
from webhook.findings.judge import scan
from webhook.findings.model import POLICY_CRD_GROUPS, ScanReport
from webhook.findings.policy_reports import FORMATS, render_reports
from webhook.findings.recreation import unread_workloads
from webhook.findings.render import fix_manifests, render_table, to_json, unfixed
from webhook.netpol import DEFAULT_LIMITS, Limits

HELP = (
    "the enforce gate: exit 1 when mode: enforce would deny what the cluster re-creates; "
    "list namespaces that are not fenced, policies that neutralise fences, workloads outside "
    "the audited scope, Pods and templates with a way onto the node, allow rules keyed on "
    "namespace labels, Services with externalIPs and who holds nodes/proxy; --fix prints the "
    "NetworkPolicies that fence them"
)
# The exposure lists (webhook.findings.exposure); each may be forbidden to whoever runs scan.
EXPOSURE_PATHS = (
    ("/api/v1/services", "Service", "services"),
    ("/apis/rbac.authorization.k8s.io/v1/clusterroles", "ClusterRole", "clusterroles"),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "ClusterRoleBinding",
        "clusterrolebindings",
    ),
)
# The workload kinds besides Pods whose templates the host-network rule judges
# (webhook.findings.host); each may be forbidden too.
WORKLOAD_PATHS = (
    ("/api/v1/replicationcontrollers", "ReplicationController", "replicationcontrollers"),
    ("/apis/apps/v1/deployments", "Deployment", "deployments"),
    ("/apis/apps/v1/replicasets", "ReplicaSet", "replicasets"),
    ("/apis/apps/v1/statefulsets", "StatefulSet", "statefulsets"),
    ("/apis/apps/v1/daemonsets", "DaemonSet", "daemonsets"),
    ("/apis/batch/v1/jobs", "Job", "jobs"),
    ("/apis/batch/v1/cronjobs", "CronJob", "cronjobs"),
)

PAGE = 500
_SUFFIXES = (".yaml", ".yml", ".json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--state", type=Path, metavar="DIR", help="folder of cluster manifests instead of a cluster"
    )
    add_cluster_arguments(parser, source)
    add_namespace_argument(parser)
    parser.add_argument("--config", type=Path, metavar="FILE", help="kubefence config file")
    add_format_argument(
        parser,
        ("table", "json", *FORMATS),
        "table",
        "table (default), json, or the findings as reports for kubectl apply -f -: "
        "policyreport (wgpolicyk8s.io/v1alpha2 PolicyReport per namespace and a "
        "ClusterPolicyReport) or openreports (openreports.io/v1alpha1 Report, ClusterReport)",
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="print the default-deny NetworkPolicies that fence every unfenced namespace (YAML); "
        "exit 0 once printed",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 on advisory findings too, not only when enforce would deny a re-creation",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    namespace = args.namespace
    if args.state is not None:
        if args.context is not None:
            raise InputError("--context names a kubeconfig context: not with --state DIR")
        view = load_state(args.state, settings.limits)
        groups = policy_groups_in(args.state)
        exposure = read_exposure(in_namespace(objects_of(args.state, EXPOSURE_KINDS), namespace))
        workloads = in_namespace(objects_of(args.state, WORKLOAD_KINDS), namespace)
    else:
        view, groups, exposure, workloads = read_cluster(
            cluster_credentials(args), settings.limits, namespace=namespace
        )
    names = [n for n in view.names() if namespace in (None, n)]
    if namespace is not None and not names:
        raise InputError(f"--namespace {namespace}: no such namespace")
    facts = [f for f in (view.namespace(n) for n in names) if f is not None]
    report = scan(facts, view, settings, groups, exposure, workloads=workloads)
    out = sys.stdout
    if args.fix:
        out.write(fix_manifests(report))
        out.flush()
        left = unfixed(report)
        if left:
            # stdout goes to kubectl: say it where the one running the pipeline reads it
            print(
                f"kubefence scan: --fix leaves {len(left)} workload{'' if len(left) == 1 else 's'}"
                " that enforce would deny (host-network, audit-scope or a neutralising policy, "
                "which a new policy does not fix): see kubefence scan",
                file=sys.stderr,
            )
        return exitcodes.OK
    if args.format == "json":
        out.write(orjson.dumps(to_json(report), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.format in FORMATS:
        out.write(render_reports(report, args.format))
    else:
        out.write(render_table(report))
    out.flush()
    return gate(report, strict=args.strict)


def gate(report: ScanReport, *, strict: bool = False) -> int:
    """1 when enforce would deny what the cluster re-creates, or a list of workloads could not
    be read; with `strict`, on an advisory finding too; else 0."""
    if report.would_deny or (strict and report.advisory):
        return exitcodes.FINDING
    if unread_workloads(report.exposure.unread):
        return exitcodes.FINDING  # fail closed: what those workloads re-create is not known
    return exitcodes.OK


# --- a live cluster -----------------------------------------------------------------------------


def read_cluster(
    kubeconfig: Kubeconfig | None, limits: Limits = DEFAULT_LIMITS, namespace: str | None = None
) -> tuple[StaticView, tuple[str, ...], Exposure, list[Mapping[str, Any]]]:
    """One consistent-enough read of the cluster: namespaces, policies, running pods, API groups,
    the exposure lists (Services, ClusterRoles, ClusterRoleBindings), and the running Pods and
    workload objects whose pod specs the host-network rule judges. With `namespace`, every
    Namespace (selectors read their labels) and only that namespace's other objects."""
    return asyncio.run(_read_cluster(kubeconfig, limits, namespace))


async def _read_cluster(
    kubeconfig: Kubeconfig | None, limits: Limits, namespace: str | None
) -> tuple[StaticView, tuple[str, ...], Exposure, list[Mapping[str, Any]]]:
    from webhook.cluster import transport

    def narrowed(path: str) -> str:
        return namespaced_path(path, namespace) or ""

    try:
        with transport.blocking(kubeconfig) as api:
            try:
                objects = [
                    *await _listed(api, "/api/v1/namespaces", "Namespace"),
                    *await _listed(
                        api, narrowed("/apis/networking.k8s.io/v1/networkpolicies"), "NetworkPolicy"
                    ),
                ]
                # Whole Pods, not their metadata: the host-network findings read their specs.
                pods = await _listed(
                    api, narrowed("/api/v1/pods"), "Pod", [("fieldSelector", RUNNING_PODS)]
                )
                objects += pods
                groups = served_groups(await api.get("/apis/", timeout=None))
                exposed: list[Mapping[str, Any]] = []
                workloads: list[Mapping[str, Any]] = [obj for _, obj in pods]
                unread: list[str] = []
                for paths, into in ((EXPOSURE_PATHS, exposed), (WORKLOAD_PATHS, workloads)):
                    for path, kind, name in paths:
                        if not narrowed(path):
                            continue  # cluster-scoped: no namespace's finding
                        try:
                            into += [obj for _, obj in await _listed(api, narrowed(path), kind)]
                        except ApiError as exc:
                            if exc.status != 403:
                                raise
                            unread.append(f"{name} ({exc.status} {exc.phrase or 'Forbidden'})")
            except ApiError as exc:
                reason = f"{exc.status} {exc.phrase}: {_message(exc.body)}"
                raise InputError(f"{api.server}: {reason}") from None
            except transport.Unreachable as exc:
                raise InputError(f"{api.server}: cannot reach the API server: {exc}") from None
    except transport.CredentialsError as exc:
        raise credentials_error(exc) from None
    view = StaticView(build_facts(iter(objects), limits))
    return view, groups, read_exposure(exposed, unread), workloads


async def _listed(
    api: Getter,
    path: str,
    kind: str,
    query: Sequence[tuple[str, str]] = (),
    *,
    accept: str = JSON,
) -> list[tuple[str, Mapping[str, Any]]]:
    """Every item of a paginated LIST, tagged with its kind (no time limit, as kubectl has none)."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    async for page in pages(api, path, query, page_size=PAGE, timeout=None, accept=accept):
        for item in page.get("items") or ():
            meta = item.get("metadata") or {}
            found.append(
                (
                    f"{kind} {meta.get('namespace', '')}/{meta.get('name', '')}",
                    {**item, "kind": kind},
                )
            )
    return found


def served_groups(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the API groups in an APIGroupList (`GET /apis`)."""
    return tuple(g["name"] for g in body.get("groups") or () if isinstance(g.get("name"), str))


def _message(body: object) -> str:
    if isinstance(body, bytes | str):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return str(body)[:200]
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return str(doc["message"])
    return ""


# --- manifests ----------------------------------------------------------------------------------


def policy_groups_in(directory: Path) -> tuple[str, ...]:
    """Policy-CRD API groups a manifest folder uses: their CRDs, or objects of their kinds."""
    found: set[str] = set()
    for path in sorted(p for p in directory.rglob("*") if p.suffix in _SUFFIXES and p.is_file()):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # load_state has read it already and reported what is wrong with it
        for doc in documents:
            items = doc.get("items") if isinstance(doc, dict) else None
            for obj in items if isinstance(items, list) else [doc]:
                if not isinstance(obj, dict):
                    continue
                group = str(obj.get("apiVersion", "")).rpartition("/")[0]
                if obj.get("kind") == "CustomResourceDefinition":
                    group = str((obj.get("spec") or {}).get("group", ""))
                if group in POLICY_CRD_GROUPS:
                    found.add(group)
    return tuple(sorted(found))
