"""kubectl's flags, read as kubectl reads them: `--kubeconfig`, `--context`, `-n`, `-o`.

`add_cluster_arguments(parser)` adds `--kubeconfig FILE` and `--context NAME`;
`cluster_credentials(args)` turns them into what `webhook.cluster.transport` connects with:
`--kubeconfig FILE` alone, else (with `--context`, or outside a Pod) every file `$KUBECONFIG`
lists merged as kubectl merges them (`webhook.cluster.kubeconfig`), else, in a Pod, its service
account (None). `add_namespace_argument(parser)` adds `-n/--namespace NAME`, and
`namespaced_path` / `in_namespace` narrow what is read to it. `add_format_argument` gives a
command's `--format` kubectl's `-o/--output` spellings.

Invariant: credentials that will not load are one InputError naming the file and the field.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from webhook.cluster.kubeconfig import CredentialsError, Kubeconfig, default_files, load
from webhook.errors import InputError


def add_cluster_arguments(
    parser: argparse.ArgumentParser,
    group: argparse._MutuallyExclusiveGroup | None = None,
    *,
    default: str = "in a Pod its service account, else $KUBECONFIG or ~/.kube/config",
) -> None:
    """`--kubeconfig FILE` (in `group` when given: exclusive with, say, `--state`) and
    `--context NAME`; `default` says what is used without them."""
    (group or parser).add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help=f"kubeconfig of the cluster (default: {default}; $KUBECONFIG may list several"
        " files, merged as kubectl merges them)",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="the kubeconfig context to use (default: its current-context)",
    )


def add_namespace_argument(parser: argparse.ArgumentParser, what: str = "findings") -> None:
    """`-n/--namespace NAME`: only that namespace's `what`."""
    parser.add_argument(
        "-n",
        "--namespace",
        metavar="NAME",
        help=f"only this namespace's {what} (default: every namespace)",
    )


def add_format_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    choices: Sequence[str],
    default: str,
    help: str,
) -> None:
    """`-o/--output/--format`, one flag: kubectl's spelling beside kubefence's (the choices
    said once, not after each of the three)."""
    parser.add_argument(
        "-o",
        "--output",
        "--format",
        dest="format",
        choices=choices,
        default=default,
        metavar="FORMAT",
        help=f"{'|'.join(choices)}: {help}",
    )


def named_kubeconfig(args: argparse.Namespace) -> bool:
    """Whether the flags ask for a kubeconfig (`--kubeconfig` or `--context`) rather than
    leaving the choice to where the command runs."""
    return args.kubeconfig is not None or args.context is not None


def in_a_pod(environ: Mapping[str, str] | None = None) -> bool:
    return "KUBERNETES_SERVICE_HOST" in (os.environ if environ is None else environ)


def cluster_credentials(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Kubeconfig | None:
    """The kubeconfig the flags choose, merged and checked; None for the Pod's service account.
    InputError naming the file and field for credentials that will not load."""
    env = os.environ if environ is None else environ
    try:
        if args.kubeconfig is not None:
            return load([args.kubeconfig], args.context, explicit=True)
        if args.context is None and in_a_pod(env):
            return None
        return load(default_files(env), args.context)
    except CredentialsError as exc:
        raise credentials_error(exc) from None


def credentials_error(exc: CredentialsError) -> InputError:
    return InputError(f"{exc.source}: cannot load cluster credentials: {exc.reason}")


def namespaced_path(path: str, namespace: str | None) -> str | None:
    """A cluster-wide LIST path (`/api/v1/pods`, `/apis/apps/v1/deployments`) narrowed to
    `namespace`; None for a cluster-scoped one (`namespaces`, RBAC's `cluster*`) when narrowed:
    it holds no namespace's findings."""
    if namespace is None:
        return path
    head, _, resource = path.rstrip("/").rpartition("/")
    if resource == "namespaces" or resource.startswith("cluster"):
        return None
    return f"{head}/namespaces/{namespace}/{resource}"


def in_namespace(
    objects: Iterable[Mapping[str, Any]], namespace: str | None
) -> list[Mapping[str, Any]]:
    """The objects of `namespace` (all of them when None); cluster-scoped ones are dropped when
    narrowed, as `namespaced_path` does not read them."""
    found = list(objects)
    if namespace is None:
        return found
    return [o for o in found if (o.get("metadata") or {}).get("namespace") == namespace]
