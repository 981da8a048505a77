"""`kubefence serve`: run the webhook over TLS against a live cluster or a folder of manifests."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from webhook import decisionlog
from webhook.cluster.static import load_state
from webhook.config import load_settings
from webhook.errors import InputError
from webhook.serving import ServeOptions, serve

HELP = "run the webhook (TLS) against a live cluster (--kubeconfig, in-cluster) or --state DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--state", type=Path, help="folder of cluster manifests instead of a live cluster"
    )
    source.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig of the cluster (default: in-cluster)"
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="kubefence config file (re-read when it changes)"
    )
    parser.add_argument("--cert", type=Path, required=True, help="serving certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="serving key (PEM)")
    parser.add_argument(
        "--client-ca", type=Path, help="require client certificates signed by this CA"
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=8443, help="port to listen on (default 8443)")
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
        help="then wait at most this long for requests in flight (default 25)",
    )


def options_from(args: argparse.Namespace) -> ServeOptions:
    for flag in ("cert", "key", "client_ca", "config"):
        path = getattr(args, flag, None)
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: --{flag.replace('_', '-')} file not found")
    return ServeOptions(
        cert=args.cert,
        key=args.key,
        host=args.host,
        port=args.port,
        client_ca=args.client_ca,
        config=args.config,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
    )


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    settings = load_settings(args.config)
    decisionlog.configure()
    if args.state is not None:
        cluster = load_state(args.state)
        return asyncio.run(serve(options, settings, cluster))
    if args.kubeconfig is None and "KUBERNETES_SERVICE_HOST" not in os.environ:
        raise InputError("no cluster: give --state DIR or --kubeconfig FILE, or run in a cluster")
    from webhook.cluster.live import serve_live

    return asyncio.run(serve_live(options, settings, args.kubeconfig))
