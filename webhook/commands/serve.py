"""`kubefence serve`: run the webhook over TLS against a live cluster or a folder of manifests.

Everything a start needs (TLS pair, client CA, config, state folder, cluster credentials, the
port) is checked before serving; what will not do is one line naming the file or address, exit 2,
never a traceback. With a live cluster this command owns the API client: opened before serving,
closed after.

Replicas (and `--workers`) elect one notifier on a Lease in kubefence's own namespace
(`--leader-election-namespace`: `$POD_NAMESPACE`, else the service account's namespace in a
Pod); each process contends under its own identity (`$POD_NAME` or the host name, and a random
suffix), so the cluster has one whichever the count. A process refused the Lease (no RBAC for
it, or no such namespace) notifies by itself until it gets it. Every process serves reviews and
keeps its view. With no namespace given (`--state`, or a kubeconfig outside a Pod without the
flag) there is no election and the one process notifies.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webhook import decisionlog, tls
from webhook.cluster.candidacy import Election, election_namespace, identity
from webhook.cluster.kubeconfig import Kubeconfig
from webhook.cluster.leaderelection import DEFAULT_LEASE_NAME
from webhook.cluster.static import load_state
from webhook.commands import workers
from webhook.commands.cluster_flags import (
    add_cluster_arguments,
    cluster_credentials,
    credentials_error,
    in_a_pod,
    named_kubeconfig,
)
from webhook.commands.running import port_number, positive_int
from webhook.config import load_settings
from webhook.decisionfeed import DecisionFeed, FeedOptions
from webhook.errors import InputError
from webhook.server import Runtime
from webhook.serving import Job, ServeOptions, serve
from webhook.settings import Settings

if TYPE_CHECKING:
    from webhook.cluster.leaderelection import Elector
    from webhook.cluster.notices import Notices
    from webhook.cluster.transport import ApiClient

HELP = "run the webhook (TLS) against a live cluster (--kubeconfig, in-cluster) or --state DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--state", type=Path, help="folder of cluster manifests instead of a live cluster"
    )
    add_cluster_arguments(
        parser,
        source,
        default="in a Pod its service account; with --context, $KUBECONFIG or ~/.kube/config",
    )
    parser.add_argument(
        "--workers",
        type=positive_int("workers"),
        default=1,
        help="serving processes sharing the port (SO_REUSEPORT), each with its own cluster view"
        " and metrics (default 1)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease that elects the one notifier of fence.lost and"
        " webhook.drift among replicas (default: $POD_NAMESPACE, else the service account's"
        ' namespace in a Pod; "" or neither: no election, this process notifies)',
    )
    parser.add_argument(
        "--leader-election-id",
        default=DEFAULT_LEASE_NAME,
        help=f"name of that Lease (default {DEFAULT_LEASE_NAME})",
    )
    parser.add_argument(
        "--decisions-to",
        action="append",
        metavar="URL",
        help="send each sensitive decision (exec, attach, portforward, a proxy, an ephemeral"
        " container, a NetworkPolicy deletion, fence-lost) to `kubefence monitor` at this"
        " https://.../decisions URL, which alerts evasion.audit_gap when no audit event records"
        " it (repeatable: one per monitor replica, or the monitor Service)",
    )
    parser.add_argument(
        "--decisions-ca", type=Path, metavar="FILE", help="the monitor's CA (default: the system's)"
    )
    parser.add_argument(
        "--decisions-token-file",
        type=Path,
        metavar="FILE",
        help="the monitor's bearer token (its --token-file; re-read when it changes)",
    )
    parser.add_argument(
        "--decisions-client-cert",
        type=Path,
        metavar="FILE",
        help="client certificate for the monitor's --client-ca (with --decisions-client-key)",
    )
    parser.add_argument(
        "--decisions-client-key",
        type=Path,
        metavar="FILE",
        help="the key of --decisions-client-cert",
    )
    # Set by the supervisor of --workers in each worker: share the port, stop with the parent.
    parser.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)


def decision_feed(args: argparse.Namespace) -> Job | None:
    """The `--decisions-to` sender as a job (it hooks itself into the runtime's decisions), or
    None without the flag; InputError (naming the file or URL) for what will not send."""
    urls = tuple(dict.fromkeys(args.decisions_to or ()))
    rest = (args.decisions_ca, args.decisions_token_file, args.decisions_client_cert)
    if not urls:
        if any(x is not None for x in (*rest, args.decisions_client_key)):
            raise InputError(
                "--decisions-ca, --decisions-token-file and --decisions-client-cert/-key"
                " need --decisions-to"
            )
        return None
    for url in urls:
        if not url.startswith("https://") or len(url) <= len("https://"):
            raise InputError(f"--decisions-to {url!r}: give an https:// URL (the monitor's TLS)")
    if (args.decisions_client_cert is None) != (args.decisions_client_key is None):
        raise InputError("--decisions-client-cert and --decisions-client-key go together")
    if args.decisions_token_file is None and args.decisions_client_cert is None:
        raise InputError(
            "--decisions-to needs the monitor's sender authentication: give"
            " --decisions-token-file or --decisions-client-cert and --decisions-client-key"
        )
    if args.decisions_token_file is not None:
        try:
            token = args.decisions_token_file.read_bytes().strip()
        except OSError as exc:
            raise InputError(
                f"{args.decisions_token_file}: cannot read: {exc.strerror or exc}"
            ) from None
        if not token:
            raise InputError(f"{args.decisions_token_file}: empty: no token in it")
    options = FeedOptions(
        targets=urls,
        ca=args.decisions_ca,
        token_file=args.decisions_token_file,
        client_cert=args.decisions_client_cert,
        client_key=args.decisions_client_key,
    )
    for path in (options.ca, options.client_cert, options.client_key):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: file not found")
    try:
        DecisionFeed.context(options)  # fail now, naming the file
    except (OSError, ValueError) as exc:
        raise InputError(f"--decisions-ca/--decisions-client-cert: cannot load: {exc}") from None

    async def job(runtime: Runtime) -> None:
        if not runtime.client_ca:
            # Only a caller verified as the API server has its decisions sent (webhook.server):
            # a forged review must not raise an audit-gap alert. Without a client CA none is.
            runtime.log.warning(
                "decisions_to.unverified",
                reason="no --client-ca: no caller is verified as the API server, so no decision"
                " is sent and the monitor can alert no audit gap; give --client-ca",
            )
        feed = DecisionFeed(
            options,
            registry=runtime.metrics.registry,
            log=runtime.log,
            policy=lambda: runtime.settings.audit_policy,
        )
        runtime.on_decision = feed.offer
        await feed.run()

    return job


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="kubefence config file (re-read when it changes)"
    )
    parser.add_argument(
        "--cert", type=Path, required=True, help="serving certificate chain (PEM, re-read)"
    )
    parser.add_argument("--key", type=Path, required=True, help="serving key (PEM, re-read)")
    parser.add_argument(
        "--client-ca", type=Path, help="require client certificates signed by this CA"
    )
    parser.add_argument(
        "--client-subject",
        help="with --client-ca: the API server's certificate (its commonName, or its whole"
        " subject as the decision log's `client` shows it); only its approvals of NetworkPolicy"
        " changes are remembered (a cluster CA also signs kubelets and users)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    parser.add_argument(
        "--port", type=port_number, default=8443, help="port to listen on (default 8443)"
    )
    parser.add_argument(
        "--probe-port",
        type=port_number,
        help="also serve /healthz, /readyz, /metrics over plain HTTP on this port (for probes"
        " and scrapers that cannot show a --client-ca certificate)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=5.0,
        help="after SIGTERM, keep serving this long with /readyz failing (default 5)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=25.0,
        help="exit at most this long after SIGTERM, drain included; requests still in flight"
        " then are cut (default 25; keep it below the Pod's terminationGracePeriodSeconds)",
    )


def options_from(args: argparse.Namespace) -> ServeOptions:
    """The serving options; InputError (naming the file) for TLS material that will not serve."""
    if args.config is not None and not Path(args.config).is_file():
        raise InputError(f"{args.config}: --config file not found")
    if not 0 <= args.drain_seconds < args.grace_seconds:
        raise InputError("--drain-seconds must be at least 0 and less than --grace-seconds")
    if args.client_subject is not None and args.client_ca is None:
        raise InputError("--client-subject needs --client-ca (a subject is only known verified)")
    tls.server_context(args.cert, args.key, args.client_ca)  # fail now, not after a cache sync
    worker_of = getattr(args, "worker_of", None)
    return ServeOptions(
        cert=args.cert,
        key=args.key,
        host=args.host,
        port=args.port,
        client_ca=args.client_ca,
        client_subject=args.client_subject,
        config=args.config,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
        probe_port=args.probe_port,
        reuse_port=worker_of is not None,
        parent_pid=worker_of,
    )


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    feed = decision_feed(args)
    extra = [feed] if feed is not None else []
    settings = load_settings(args.config)
    credentials = None
    if args.state is not None:
        if args.context is not None:
            raise InputError("--context names a kubeconfig context: not with --state DIR")
        cluster = load_state(args.state, settings.limits)
    elif not named_kubeconfig(args) and not in_a_pod():
        raise InputError("no cluster: give --state DIR or --kubeconfig FILE, or run in a cluster")
    else:
        credentials = cluster_credentials(args)  # now, not in each worker once the port is taken
    decisionlog.configure()
    if args.workers > 1:
        return workers.supervise(args, run)
    if args.state is not None:
        return asyncio.run(serve(options, settings, cluster, background=[_sole_notifier, *extra]))
    election = Election(
        namespace=election_namespace(args.leader_election_namespace),
        name=args.leader_election_id,
        identity=identity(),
    )
    return asyncio.run(serve_live(options, settings, credentials, election, extra))


async def _sole_notifier(runtime: Runtime) -> None:
    runtime.metrics.leader.set(1)  # no election: this process sends every notice


async def serve_live(
    options: ServeOptions,
    settings: Settings,
    kubeconfig: Kubeconfig | Path | None,
    election: Election | None = None,
    extra: list[Job] | None = None,
) -> int:
    """Serve with the live cluster view: the informer, the drift watch, the notices (elected when
    `election` names a namespace) and (for a kubeconfig) its credential refreshes run beside the
    server in its loop, over one API client owned here."""
    # Imported here: `serve --state` loads no Kubernetes client.
    from webhook.cluster import transport
    from webhook.cluster.driftwatch import DriftWatch
    from webhook.cluster.leaderelection import Elector
    from webhook.cluster.live import build
    from webhook.cluster.notices import Notices

    try:
        api, loader = await transport.connect(kubeconfig)
    except transport.CredentialsError as exc:
        raise credentials_error(exc) from None
    try:
        kube = transport.KubeTransport(api)
        log = decisionlog.get_logger()
        notices = Notices(log=log, lister=kube)
        view = build(api, limits=settings.limits, notices=notices)
        background: list[Job] = [
            view.informer.run,
            DriftWatch(kube, notices=notices).run,
            notices.run,
        ]
        if election is not None and election.namespace:
            elector = Elector(
                kube,
                election.namespace,
                election.name,
                election.identity,
                log=log,
                lead_when_refused=True,  # no RBAC for the Lease: duplicates, not silence
            )
            notices.leading = lambda: elector.leading
            background.append(_elect(elector, notices))
        else:
            log.info(
                "leader_election.off", reason="no namespace for the Lease: this process notifies"
            )
            background.append(_sole_notifier)
        if loader is not None:
            background.append(_refresh(loader, api))
        background += extra or []
        return await serve(options, settings, view, background=background, confirmer=view)
    finally:
        await transport.close(api)


def _elect(elector: Elector, notices: Notices) -> Job:
    async def job(runtime: Runtime) -> None:
        def changed(leading: bool, since: float) -> None:
            runtime.metrics.leader.set(1 if leading else 0)
            notices.leadership_changed(leading, since)

        elector.on_change = changed
        runtime.metrics.leader.set(0)
        await elector.run()

    return job


def _refresh(loader: Any, api: ApiClient) -> Job:
    """Keep exec-plugin and GCP credentials of a kubeconfig fresh (returns at once otherwise)."""
    from webhook.cluster import transport

    async def job(runtime: Runtime) -> None:
        await transport.refresh_credentials(loader, api)

    return job
