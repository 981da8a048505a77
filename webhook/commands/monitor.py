"""`kubefence monitor`: receive the API server's audit webhook backend and alert evasion live.

Everything a start needs (TLS pair, client CA, token file, config, ports, cluster credentials for
`--canary`) is checked before serving; what will not do is one line, exit 2. Without a client CA
or a token file the sender is anyone who can reach the port (an "all clear" or a flood), so the
monitor refuses to start unless `--insecure-allow-unauthenticated` says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from webhook import decisionlog, tls
from webhook.cluster.kubeconfig import CredentialsError
from webhook.cluster.kubeconfig import check as check_kubeconfig
from webhook.commands.running import port_number, positive_int
from webhook.config import load_settings
from webhook.correlate.detect import CanaryWatch
from webhook.correlate.model import CorrelateOptions
from webhook.errors import InputError
from webhook.monitor.feed import Feed
from webhook.monitor.server import Job, MonitorOptions, MonitorRuntime, read_token, run_monitor

HELP = (
    "receive the API server's audit webhook backend (POST /audit) and log evasion alerts live: "
    "bypasses, sensitive access, probing, fence removals, a silent feed"
)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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
    parser.add_argument(
        "--probe-threshold",
        type=positive_int("denials"),
        metavar="N",
        default=10,
        help="denials of one authenticated user within --probe-window that are probing",
    )
    parser.add_argument(
        "--probe-window",
        type=float,
        metavar="SECONDS",
        default=600.0,
        help="the sliding probing window in seconds",
    )
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
        "--kubeconfig",
        type=Path,
        help="kubeconfig for the canary's requests (default: in-cluster)",
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
    if args.config is not None and not Path(args.config).is_file():
        raise InputError(f"{args.config}: --config file not found")
    if args.canary is not None and not args.canary > 0:
        raise InputError("--canary must be a number of seconds above 0")
    if not args.probe_window > 0:
        raise InputError("--probe-window must be a number of seconds above 0")
    token = None
    if args.token_file is not None:
        try:
            token = read_token(args.token_file)
        except OSError as exc:
            raise InputError(f"{args.token_file}: cannot read: {exc.strerror or exc}") from None
        except ValueError:
            raise InputError(f"{args.token_file}: empty: no token in it") from None
    tls.server_context(args.cert, args.key, args.client_ca)  # fail now, naming the file
    settings = load_settings(args.config)
    options = CorrelateOptions(
        webhook_names=tuple(dict.fromkeys(args.webhook_name or settings.webhook_names)),
        exempt_namespaces=settings.exemptions.namespaces,
        probe_threshold=args.probe_threshold,
        probe_window=args.probe_window,
    )
    canary_target = _canary_target(args) if args.canary is not None else None
    if args.canary is not None:
        if args.kubeconfig is None and "KUBERNETES_SERVICE_HOST" not in os.environ:
            raise InputError("--canary needs cluster credentials: give --kubeconfig FILE")
        if args.kubeconfig is not None:
            try:
                check_kubeconfig(args.kubeconfig)
            except CredentialsError as exc:
                raise InputError(
                    f"{exc.source}: cannot load cluster credentials: {exc.reason}"
                ) from None
    decisionlog.configure()
    watch = CanaryWatch(2 * args.canary) if args.canary is not None else None
    runtime = MonitorRuntime(feed=Feed(options, watch), log=decisionlog.get_logger(), token=token)
    serve_options = MonitorOptions(
        cert=args.cert,
        key=args.key,
        client_ca=args.client_ca,
        token_file=args.token_file,
        host=args.host,
        port=args.port,
        probe_port=args.probe_port,
    )
    return asyncio.run(_serve(serve_options, runtime, args, canary_target))


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
) -> int:
    watch = runtime.feed.canary
    if watch is None or canary_target is None:
        return await run_monitor(options, runtime)
    # Imported here: a monitor without --canary loads no Kubernetes client.
    from webhook.cluster import transport
    from webhook.monitor.canary import send_canaries

    try:
        api, _ = await transport.connect(args.kubeconfig)
    except transport.CredentialsError as exc:
        raise InputError(f"{exc.source}: cannot load cluster credentials: {exc.reason}") from None
    namespace, name = canary_target

    async def canary(rt: MonitorRuntime) -> None:
        await send_canaries(api, watch, (namespace, name), interval=args.canary, log=rt.log)

    jobs: list[Job] = [canary]
    try:
        return await run_monitor(options, runtime, background=jobs)
    finally:
        await transport.close(api)
