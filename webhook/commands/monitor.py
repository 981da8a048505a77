"""`kubefence monitor`: receive the API server's audit webhook backend and alert evasion live.

Everything a start needs (TLS pair, client CA, token file, config, ports, cluster credentials for
`--canary`) is checked before serving; what will not do is one line, exit 2. Without a client CA
or a token file the sender is anyone who can reach the port (an "all clear" or a flood), so the
monitor refuses to start unless `--insecure-allow-unauthenticated` says so. `--config` is
re-read when it changes, as `serve` re-reads it (exemptions and webhook names apply from then on).

Replicas elect one active monitor on a Lease (`--leader-election-namespace`: `$POD_NAMESPACE`,
else the service account's namespace in a Pod; `--leader-election-id`, default
`kubefence-monitor`), as `serve` elects its notifier: only the holder is Ready and takes batches
(`webhook.monitor.server`). Election needs cluster credentials (`--kubeconfig`, or in-cluster);
without them, or with no namespace, there is none and this process takes every batch.

With `--audit-gap-window` the monitor also takes `serve --decisions-to`'s sensitive decisions on
`POST /decisions` (authenticated as `/audit` is; `--decisions-subject` narrows the certificates;
`--decisions-port` adds a listener of it alone for a sender the API server's CA did not sign, by
`--decisions-token-file` and/or `--decisions-client-ca`, and refuses to start with neither) and
alerts `evasion.audit_gap` for one no audit event records (`webhook.monitor.gaps`).

With `--alertmanager URL` (repeatable) each alert is posted to that Alertmanager's v2 API as well
(`webhook.monitor.alertmanager`), with its CA, a client certificate, and a bearer token file or
basic auth (a username and a password file), as Prometheus's `alerting` section has them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from webhook import decisionlog, tls
from webhook.cluster.candidacy import (
    SERVICE_ACCOUNT_NAMESPACE,
    Election,
    election_namespace,
    identity,
)
from webhook.cluster.kubeconfig import Kubeconfig
from webhook.commands.cluster_flags import (
    add_cluster_arguments,
    cluster_credentials,
    credentials_error,
    in_a_pod,
    named_kubeconfig,
)
from webhook.commands.running import add_probing_arguments, port_number
from webhook.config import load_settings
from webhook.correlate.model import CorrelateOptions
from webhook.errors import InputError
from webhook.monitor.alerting import LIFETIME_SECONDS, RESEND_SECONDS, DeliveryPolicy, parse_label
from webhook.monitor.alertmanager import (
    TIMEOUT_SECONDS,
    AlertmanagerOptions,
    AlertSender,
    api_url,
    client_context,
    read_secret,
)
from webhook.monitor.canary import CanaryWatch
from webhook.monitor.feed import Feed
from webhook.monitor.gaps import GapWatch
from webhook.monitor.server import Job, MonitorOptions, MonitorRuntime, read_token, run_monitor
from webhook.settings import Settings

if TYPE_CHECKING:
    from webhook.cluster.transport import ApiClient

HELP = (
    "receive the API server's audit webhook backend (POST /audit) and log evasion alerts live: "
    "bypasses, sensitive access, probing, fence removals, a silent feed, audit gaps"
)

MONITOR_LEASE_NAME = "kubefence-monitor"
CONFIG_POLL_SECONDS = 2.0  # as `serve` polls its config file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cert", type=Path, required=True, help="serving certificate chain (PEM, re-read)"
    )
    parser.add_argument("--key", type=Path, required=True, help="serving key (PEM, re-read)")
    parser.add_argument(
        "--client-ca",
        type=Path,
        help="require client certificates signed by this CA (refused at the TLS layer)",
    )
    parser.add_argument(
        "--client-subject",
        action="append",
        metavar="NAME",
        help="with --client-ca: the only sender allowed (repeatable), by the commonName of its"
        " certificate or its whole subject as `key=value,...` (403 for another: a cluster CA also"
        " signs kubelets and users)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="require `Authorization: Bearer` with the token in this file (401 otherwise; re-read)",
    )
    parser.add_argument(
        "--insecure-allow-unauthenticated",
        action="store_true",
        help="start without --client-ca or --token-file: anyone who reaches the port can feed"
        " it events",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    parser.add_argument("--port", type=port_number, default=8444, help="port to listen on")
    parser.add_argument(
        "--probe-port",
        type=port_number,
        help="also serve /healthz, /readyz, /metrics over plain HTTP on this port",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="kubefence config file (exemptions, names)"
    )
    parser.add_argument(
        "--webhook-name",
        action="append",
        metavar="NAME",
        help="the webhook's name in the ValidatingWebhookConfiguration (repeatable; default: the "
        "config's webhookName or webhookNames)",
    )
    add_probing_arguments(parser)
    parser.add_argument(
        "--canary",
        type=float,
        metavar="SECONDS",
        help="every SECONDS, GET --canary-configmap with a marker user agent and alert"
        " evasion.feed_silent when its audit event has not come back within twice that (set it"
        " above the API server's --audit-webhook-batch-max-wait)",
    )
    parser.add_argument(
        "--canary-configmap",
        metavar="NAMESPACE/NAME",
        help="the ConfigMap the canary reads (it need not exist; default: the Pod's namespace"
        " and kubefence-monitor-canary)",
    )
    parser.add_argument(
        "--audit-gap-window",
        type=float,
        metavar="SECONDS",
        help="take the webhook's sensitive decisions on POST /decisions (serve --decisions-to)"
        " and alert evasion.audit_gap for one that no audit event records within SECONDS of"
        " audit time (set it above the API server's --audit-webhook-batch-max-wait)",
    )
    parser.add_argument(
        "--decisions-subject",
        action="append",
        metavar="NAME",
        help="with --client-ca: the only certificate allowed to POST /decisions (repeatable;"
        " default: as --client-subject)",
    )
    parser.add_argument(
        "--decisions-port",
        type=port_number,
        help="also take POST /decisions on this port, for a sender the --client-ca did not sign"
        " (serve in the chart): authenticated by --decisions-token-file and/or"
        " --decisions-client-ca",
    )
    parser.add_argument(
        "--decisions-token-file",
        type=Path,
        help="the --decisions-port's bearer token (401 without it; re-read)",
    )
    parser.add_argument(
        "--decisions-client-ca",
        type=Path,
        help="the --decisions-port's client CA (a certificate it signed is required there)",
    )
    parser.add_argument(
        "--webhook-client-subject",
        action="append",
        metavar="NAME",
        help="the API server's client certificate as serve logs it (`client`; repeatable): a"
        " decision for another client is no audit gap (default: any verified certificate)",
    )
    add_cluster_arguments(
        parser,
        default="in a Pod its service account; with --context, $KUBECONFIG or ~/.kube/config."
        " For the canary's requests and the Lease",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease that elects the one active monitor among replicas: only"
        " its holder is Ready and takes batches, a follower answers 503 so the API server"
        " re-sends to the holder (default: $POD_NAMESPACE, else the service account's namespace"
        ' in a Pod; "", no namespace or no cluster credentials: no election)',
    )
    parser.add_argument(
        "--leader-election-id",
        default=MONITOR_LEASE_NAME,
        help=f"name of that Lease (default {MONITOR_LEASE_NAME})",
    )
    add_alertmanager_arguments(parser)


def add_alertmanager_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("alerts into Alertmanager")
    group.add_argument(
        "--alertmanager",
        action="append",
        metavar="URL",
        help="also post each alert to this Alertmanager's v2 API (POST URL/api/v2/alerts; URL is"
        " http(s)://host:port with its route prefix, if any; repeatable: each gets every alert)",
    )
    group.add_argument(
        "--alertmanager-ca", type=Path, metavar="FILE", help="the Alertmanagers' CA (PEM, re-read)"
    )
    group.add_argument(
        "--alertmanager-cert",
        type=Path,
        metavar="FILE",
        help="client certificate to show the Alertmanagers (PEM, with --alertmanager-key)",
    )
    group.add_argument("--alertmanager-key", type=Path, metavar="FILE", help="its key (PEM)")
    group.add_argument(
        "--alertmanager-token-file",
        type=Path,
        metavar="FILE",
        help="send `Authorization: Bearer` with the token in this file (re-read)",
    )
    group.add_argument("--alertmanager-username", metavar="NAME", help="basic auth: the username")
    group.add_argument(
        "--alertmanager-password-file",
        type=Path,
        metavar="FILE",
        help="basic auth: the file holding the password (re-read)",
    )
    group.add_argument(
        "--alertmanager-label",
        action="append",
        metavar="NAME=VALUE",
        help="a label on every alert (repeatable), e.g. cluster=prod-eu: one Alertmanager takes"
        " every cluster's monitor",
    )
    group.add_argument(
        "--alertmanager-resend",
        type=float,
        default=RESEND_SECONDS,
        metavar="SECONDS",
        help="post active alerts again this often, each with endsAt four periods on: a restarted"
        f" Alertmanager has them back within one (default {RESEND_SECONDS:.0f})",
    )
    group.add_argument(
        "--alertmanager-alert-lifetime",
        type=float,
        default=LIFETIME_SECONDS,
        metavar="SECONDS",
        help="how long an alert stays active from its last raise, then is posted resolved"
        f" (evasion.feed_silent: until the canary comes back; default {LIFETIME_SECONDS:.0f})",
    )
    group.add_argument(
        "--alertmanager-timeout",
        type=float,
        default=TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"per post (default {TIMEOUT_SECONDS:.0f})",
    )


def run(args: argparse.Namespace) -> int:
    if (
        args.client_ca is None
        and args.token_file is None
        and not args.insecure_allow_unauthenticated
    ):
        raise InputError(
            "refusing to start without sender authentication: give --client-ca or --token-file"
            " (or --insecure-allow-unauthenticated)"
        )
    if args.client_subject and args.client_ca is None:
        raise InputError("--client-subject needs --client-ca (a subject is only known verified)")
    if args.config is not None and not Path(args.config).is_file():
        raise InputError(f"{args.config}: --config file not found")
    if args.canary is not None and not args.canary > 0:
        raise InputError("--canary must be a number of seconds above 0")
    token = _token(args.token_file) if args.token_file is not None else None
    tls.server_context(args.cert, args.key, args.client_ca)  # fail now, naming the file
    decisions_token = _check_decisions(args)
    alertmanager = alertmanager_options(args)
    settings = load_settings(args.config)
    options = CorrelateOptions(
        webhook_names=_webhook_names(args, settings),
        exempt_namespaces=settings.exemptions.namespaces,
        webhook_configuration=settings.drift.webhook_configuration if settings.drift else "",
        probe_threshold=args.probe_threshold,
        probe_window=args.probe_window,
    )
    canary_target = _canary_target(args) if args.canary is not None else None
    credentials = named_kubeconfig(args) or in_a_pod()
    if args.canary is not None and not credentials:
        raise InputError("--canary needs cluster credentials: give --kubeconfig FILE")
    if args.leader_election_namespace and not credentials:
        raise InputError(
            "--leader-election-namespace needs cluster credentials: give --kubeconfig FILE"
        )
    election = None
    if credentials:
        namespace = election_namespace(args.leader_election_namespace)
        if namespace:
            election = Election(namespace, args.leader_election_id, identity())
    kubeconfig = None
    if named_kubeconfig(args) and (args.canary is not None or election is not None):
        kubeconfig = cluster_credentials(args)
    decisionlog.configure()
    watch = CanaryWatch(2 * args.canary) if args.canary is not None else None
    gaps = None
    if args.audit_gap_window is not None:
        gaps = GapWatch(
            dataclasses.replace(
                options,
                join_window=args.audit_gap_window,
                client_subjects=frozenset(args.webhook_client_subject or ()),
            )
        )
    runtime = MonitorRuntime(
        feed=Feed(options, watch, gaps),
        log=decisionlog.get_logger(),
        token=token,
        client_subjects=tuple(dict.fromkeys(args.client_subject or ())),
        decision_subjects=tuple(dict.fromkeys(args.decisions_subject or ())),
        decisions_token=decisions_token,
    )
    if election is not None:
        runtime.lease = f"{election.namespace}/{election.name}"
        runtime.leading = lambda: False  # until the elector has written the Lease
    alert_jobs: list[Job] = []
    if alertmanager is not None:
        sender = AlertSender(alertmanager, registry=runtime.metrics.registry, log=runtime.log)
        runtime.sinks.append(sender.alert)
        alert_jobs.append(_alerts(sender))
    serve_options = MonitorOptions(
        cert=args.cert,
        key=args.key,
        client_ca=args.client_ca,
        token_file=args.token_file,
        host=args.host,
        port=args.port,
        probe_port=args.probe_port,
        decisions_port=args.decisions_port,
        decisions_token_file=args.decisions_token_file,
        decisions_client_ca=args.decisions_client_ca,
    )
    return asyncio.run(
        _serve(
            serve_options,
            runtime,
            args,
            canary_target,
            election,
            alerts=alert_jobs,
            kubeconfig=kubeconfig,
        )
    )


def alertmanager_options(args: argparse.Namespace) -> AlertmanagerOptions | None:
    """The `--alertmanager*` flags checked (files read once now, to fail naming them); None
    without `--alertmanager`."""
    flags = {
        "--alertmanager-ca": args.alertmanager_ca,
        "--alertmanager-cert": args.alertmanager_cert,
        "--alertmanager-key": args.alertmanager_key,
        "--alertmanager-token-file": args.alertmanager_token_file,
        "--alertmanager-username": args.alertmanager_username,
        "--alertmanager-password-file": args.alertmanager_password_file,
        "--alertmanager-label": args.alertmanager_label,
    }
    if not args.alertmanager:
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise InputError(f"{given[0]} needs --alertmanager URL")
        return None
    urls = tuple(dict.fromkeys(args.alertmanager))
    for url in urls:
        try:
            api_url(url)
        except ValueError as exc:
            raise InputError(f"--alertmanager {url!r}: {exc}") from None
    for flag in ("resend", "alert_lifetime", "timeout"):
        if not getattr(args, f"alertmanager_{flag}") > 0:
            name = "--alertmanager-" + flag.replace("_", "-")
            raise InputError(f"{name} must be a number of seconds above 0")
    if (args.alertmanager_cert is None) != (args.alertmanager_key is None):
        raise InputError("--alertmanager-cert and --alertmanager-key go together")
    if (args.alertmanager_username is None) != (args.alertmanager_password_file is None):
        raise InputError("--alertmanager-username and --alertmanager-password-file go together")
    if args.alertmanager_username is not None and ":" in args.alertmanager_username:
        raise InputError("--alertmanager-username: basic auth allows no `:` in a username")
    if args.alertmanager_token_file is not None and args.alertmanager_username is not None:
        raise InputError(
            "give --alertmanager-token-file or basic auth (--alertmanager-username), not both"
        )
    for flag in ("--alertmanager-token-file", "--alertmanager-password-file"):
        path = flags[flag]
        if path is not None:
            try:
                read_secret(path)
            except OSError as exc:
                raise InputError(f"{path}: {flag}: cannot read: {exc.strerror or exc}") from None
            except (UnicodeDecodeError, ValueError) as exc:
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                raise InputError(f"{path}: {flag}: {reason}") from None
    labels: dict[str, str] = {}
    for text in args.alertmanager_label or ():
        try:
            name, value = parse_label(text)
        except ValueError as exc:
            raise InputError(f"--alertmanager-label {text!r}: {exc}") from None
        labels[name] = value
    options = AlertmanagerOptions(
        urls=urls,
        ca=args.alertmanager_ca,
        client_cert=args.alertmanager_cert,
        client_key=args.alertmanager_key,
        token_file=args.alertmanager_token_file,
        username=args.alertmanager_username,
        password_file=args.alertmanager_password_file,
        timeout=args.alertmanager_timeout,
        policy=DeliveryPolicy(
            resend=args.alertmanager_resend,
            lifetime=args.alertmanager_alert_lifetime,
            labels=labels,
        ),
    )
    _check_tls(options)
    return options


def _check_tls(o: AlertmanagerOptions) -> None:
    """Load the CA and the client pair now, to fail naming the file."""
    if o.ca is not None:
        try:
            ssl.create_default_context(cafile=str(o.ca))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InputError(f"{o.ca}: --alertmanager-ca: cannot load: {reason}") from None
    if o.client_cert is not None:
        try:
            client_context(o)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InputError(
                f"{o.client_cert}: --alertmanager-cert/--alertmanager-key: cannot load the"
                f" client pair: {reason}"
            ) from None


def _alerts(sender: AlertSender) -> Job:
    async def job(rt: MonitorRuntime) -> None:
        await sender.run(lambda: rt.feed.canary.last_seen if rt.feed.canary is not None else None)

    return job


def _check_decisions(args: argparse.Namespace) -> bytes | None:
    """The flags of POST /decisions checked; the decisions port's token (None: none)."""
    if args.audit_gap_window is not None and not args.audit_gap_window > 0:
        raise InputError("--audit-gap-window must be a number of seconds above 0")
    if args.decisions_subject and args.client_ca is None and args.decisions_client_ca is None:
        raise InputError(
            "--decisions-subject needs --client-ca or --decisions-client-ca (a subject is only"
            " known verified)"
        )
    decisions_flags = (args.decisions_token_file, args.decisions_client_ca)
    if args.decisions_port is not None:
        if args.audit_gap_window is None:
            raise InputError("--decisions-port needs --audit-gap-window (what decisions are for)")
        if all(x is None for x in decisions_flags):
            raise InputError(
                "refusing a --decisions-port without sender authentication: give"
                " --decisions-token-file or --decisions-client-ca"
            )
    elif any(x is not None for x in decisions_flags):
        raise InputError("--decisions-token-file and --decisions-client-ca need --decisions-port")
    if args.decisions_port is None:
        return None
    tls.server_context(args.cert, args.key, args.decisions_client_ca)
    return _token(args.decisions_token_file) if args.decisions_token_file is not None else None


def _token(path: Path) -> bytes:
    try:
        return read_token(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError:
        raise InputError(f"{path}: empty: no token in it") from None


def _canary_target(args: argparse.Namespace) -> tuple[str, str]:
    text = args.canary_configmap
    if text is None:
        try:
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError:
            raise InputError("--canary-configmap NAMESPACE/NAME is needed outside a Pod") from None
        return namespace, "kubefence-monitor-canary"
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise InputError(f"--canary-configmap {text!r}: give NAMESPACE/NAME")
    return namespace, name


async def _serve(
    options: MonitorOptions,
    runtime: MonitorRuntime,
    args: argparse.Namespace,
    canary_target: tuple[str, str] | None,
    election: Election | None,
    *,
    kubeconfig: Kubeconfig | None,
    alerts: list[Job],
) -> int:
    if election is None and (in_a_pod() or named_kubeconfig(args)):
        runtime.log.info(
            "leader_election.off", reason="no namespace for the Lease: this process takes batches"
        )
    config = [*alerts, *([follow_config(args)] if args.config is not None else [])]
    if canary_target is None and election is None:
        return await run_monitor(options, runtime, background=config)
    # Imported here: a monitor without --canary or election loads no Kubernetes client.
    from webhook.cluster import transport

    clients: list[transport.ApiClient] = []
    try:
        jobs: list[Job] = [*config]
        if election is not None:
            clients.append(await _connect(kubeconfig))
            jobs.append(_elect(clients[-1], election, runtime))
        if canary_target is not None:
            clients.append(await _connect(kubeconfig))
            jobs.append(_canary(clients[-1], canary_target, args.canary))
        return await run_monitor(options, runtime, background=jobs)
    finally:
        for api in clients:
            await transport.close(api)


def _webhook_names(args: argparse.Namespace, settings: Settings) -> tuple[str, ...]:
    return tuple(dict.fromkeys(args.webhook_name or settings.webhook_names))


def follow_config(args: argparse.Namespace) -> Job:
    """Re-read `--config` when it changes, as `serve` does: its exemptions and webhook names
    (unless `--webhook-name` gives them) apply to the events that come after; a config that does
    not load is logged and the one in force stays."""
    path = Path(args.config)

    async def job(rt: MonitorRuntime) -> None:
        signature = tls.file_signature(path)
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            current = tls.file_signature(path)
            if current == signature:
                continue
            signature = current
            try:
                settings = load_settings(path)
            except InputError as exc:
                rt.log.error("config.rejected", file=str(path), reason=str(exc))
                continue
            options = dataclasses.replace(
                rt.feed.options,
                webhook_names=_webhook_names(args, settings),
                exempt_namespaces=settings.exemptions.namespaces,
                webhook_configuration=settings.drift.webhook_configuration
                if settings.drift
                else "",
            )
            rt.feed.reconfigured(options)
            rt.log.info("config.applied", file=str(path), revision=settings.revision)

    return job


async def _connect(kubeconfig: Kubeconfig | None) -> ApiClient:
    from webhook.cluster import transport

    try:
        api, _ = await transport.connect(kubeconfig)
    except transport.CredentialsError as exc:
        raise credentials_error(exc) from None
    return api


def _elect(api: ApiClient, election: Election, runtime: MonitorRuntime) -> Job:
    """Contend for the monitor Lease on a client of its own; a takeover starts a fresh feed."""
    from webhook.cluster import transport
    from webhook.cluster.leaderelection import Elector

    elector = Elector(
        transport.KubeTransport(api),
        election.namespace,
        election.name,
        election.identity,
        log=runtime.log,
        on_change=lambda leading, since: runtime.took_over() if leading else None,
        # No RBAC for the Lease: every replica Ready and judging (split counts), not none of
        # them Ready while the API server's batches go unanswered.
        lead_when_refused=True,
    )
    runtime.leading = lambda: elector.leading

    async def job(rt: MonitorRuntime) -> None:
        await elector.run()

    return job


def _canary(api: ApiClient, target: tuple[str, str], interval: float) -> Job:
    from webhook.monitor.canary.sender import send_canaries

    async def job(rt: MonitorRuntime) -> None:
        await send_canaries(
            api,
            lambda: rt.feed.canary,
            target,
            interval=interval,
            log=rt.log,
            leading=rt.leading,
        )

    return job
