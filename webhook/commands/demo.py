"""`kubefence demo`: the webhook on an embedded default, with curl lines that show it decide.

Certificates are generated into --out (reused when valid), the cluster is the built-in demo state
(namespace `shop` fenced, `sandbox` not), written to `<out>/demo/cluster.yaml` so `kubefence
review --state <out>/demo` decides against it offline, and two AdmissionReviews are written to
`<out>/reviews/`. Every path printed is absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from webhook import certs, decisionlog, exitcodes
from webhook.cluster.static import build_facts
from webhook.cluster.view import StaticView
from webhook.commands.running import port_number
from webhook.config import load_settings
from webhook.errors import InputError
from webhook.serving import ServeOptions, serve

HELP = "run the webhook on generated certificates and a built-in demo cluster; print curl lines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("certs"),
        help="where certificates and sample reviews go (default certs/)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=port_number, default=8443, help="port (default 8443)")
    parser.add_argument(
        "--config", type=Path, help="kubefence config file (default: built-in defaults)"
    )


def demo_cluster_text() -> str:
    return importlib.resources.files("webhook.demo").joinpath("cluster.yaml").read_text("utf-8")


def demo_cluster() -> StaticView:
    objects = [("demo/cluster.yaml", doc) for doc in yaml.safe_load_all(demo_cluster_text()) if doc]
    return StaticView(build_facts(iter(objects)))


def sample_review(uid: str, namespace: str, name: str) -> dict[str, Any]:
    """A Deployment CREATE as kube-apiserver sends it."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
            "object": deployment,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


# Written into --out by every demo run: its files there are the demo's own, to reuse or rewrite.
MARKER = ".kubefence-demo"
# What the demo writes into --out; without MARKER beside them they are another command's.
WRITES = (
    "ca.crt",
    "ca.key",
    "tls.crt",
    "tls.key",
    "demo/cluster.yaml",
    "reviews/allowed.json",
    "reviews/denied.json",
)


def refuse_foreign_files(out: Path) -> None:
    """Bad input when --out holds a file the demo would overwrite that an earlier demo did not
    write (`kubefence certs generate --out certs`, say): exit 2 naming it."""
    if (out / MARKER).is_file():
        return
    for name in WRITES:
        if (out / name).exists():
            raise InputError(
                f"{out / name}: not written by kubefence demo (no {out / MARKER}); "
                "give --out another folder, or remove the file"
            )


def run(args: argparse.Namespace) -> int:
    # Absolute paths, so the printed curl lines work from any folder.
    out = args.out.resolve()
    refuse_foreign_files(out)
    paths = certs.ensure_dev_certs(out)
    (out / MARKER).write_text("written by kubefence demo; its files here may be rewritten\n")
    # The state folder holds the cluster only; the reviews go beside it, not into it.
    state = out / "demo"
    state.mkdir(parents=True, exist_ok=True)
    (state / "cluster.yaml").write_text(demo_cluster_text(), encoding="utf-8")
    samples = out / "reviews"
    samples.mkdir(parents=True, exist_ok=True)
    allowed = samples / "allowed.json"
    denied = samples / "denied.json"
    allowed.write_bytes(
        orjson.dumps(sample_review("demo-allowed-1", "shop", "web"), option=orjson.OPT_INDENT_2)
    )
    denied.write_bytes(
        orjson.dumps(sample_review("demo-denied-1", "sandbox", "web"), option=orjson.OPT_INDENT_2)
    )
    settings = load_settings(args.config)
    options = ServeOptions(
        cert=paths.cert,
        key=paths.key,
        host=args.host,
        port=args.port,
        config=args.config,
        drain_seconds=0.0,
        sigint_code=exitcodes.INTERRUPTED,  # Ctrl-C ends the demo: 130, as for every command
    )

    def started(port: int) -> None:
        url = (
            f"https://{'127.0.0.1' if args.host in ('0.0.0.0', '127.0.0.1') else args.host}:{port}"  # noqa: S104
        )
        curl = f"curl -sS --cacert {paths.ca_cert} -H 'Content-Type: application/json'"
        print(
            "\nkubefence demo is serving. Namespace 'shop' is fenced, 'sandbox' is not.\n\n"
            "  # allowed: a Deployment in the fenced namespace\n"
            f"  {curl} --data @{allowed} {url}/validate\n\n"
            "  # denied: the same Deployment in the open namespace\n"
            f"  {curl} --data @{denied} {url}/validate\n\n"
            f"  curl -sS --cacert {paths.ca_cert} {url}/readyz\n"
            f"  curl -sS --cacert {paths.ca_cert} {url}/metrics\n\n"
            "  # the same decision offline, against the demo's cluster (exit 1: denied)\n"
            f"  kubefence review --state {state} {denied}\n\n"
            "Decision log lines follow (JSON, one per decision). Ctrl-C stops.\n",
            file=sys.stderr,
            flush=True,
        )

    decisionlog.configure()
    return asyncio.run(serve(options, settings, demo_cluster(), started=started))
