"""`kubefence certs generate`: a CA and the webhook Service's serving certificate, and the caBundle.

An existing CA (in --out, or --ca-cert/--ca-key) is kept: re-running renews the serving cert only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from webhook import certs, exitcodes
from webhook.commands.running import positive_int
from webhook.errors import InputError

HELP = "make a CA and a serving certificate for the webhook Service, print the caBundle"

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="certs_command", metavar="ACTION")
    sub.required = True
    gen = sub.add_parser(
        "generate",
        help="write ca.crt, tls.crt, tls.key (and ca.key for a new CA); print the caBundle",
        description="Write ca.crt, tls.crt, tls.key (and ca.key when a new CA is made) to --out "
        "and print the base64 caBundle for the ValidatingWebhookConfiguration.",
    )
    gen.add_argument("--service", required=True, help="the webhook's Service name")
    gen.add_argument("--namespace", required=True, help="the Service's namespace")
    gen.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    gen.add_argument(
        "--days", type=positive_int("days"), default=365, help="serving cert validity in days"
    )
    gen.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="EXTRA",
        help="another DNS name or IP address for the serving cert (repeatable)",
    )
    gen.add_argument("--ca-cert", type=Path, metavar="FILE", help="sign with this CA certificate")
    gen.add_argument("--ca-key", type=Path, metavar="FILE", help="the key of --ca-cert")
    gen.add_argument(
        "--key-type", choices=["ecdsa", "rsa"], default="ecdsa", help="the key algorithm"
    )


def run(args: argparse.Namespace) -> int:
    if args.certs_command == "generate":
        return _generate(args)
    raise InputError(f"unknown action {args.certs_command!r}")


def _check_name(flag: str, value: str) -> None:
    if not _DNS_LABEL.fullmatch(value):
        raise InputError(f"{flag} {value!r}: not a DNS label (lowercase a-z, 0-9, '-'; at most 63)")


def _generate(args: argparse.Namespace) -> int:
    _check_name("--service", args.service)
    _check_name("--namespace", args.namespace)
    try:
        extra_dns, ips = certs.split_sans(args.san)
    except InputError as exc:
        raise InputError(f"--san {exc}") from None
    out: Path = args.out
    if (args.ca_cert is None) != (args.ca_key is None):
        raise InputError("--ca-cert and --ca-key go together")
    if args.ca_cert is not None:
        ca_cert, ca_key = certs.load_ca(args.ca_cert, args.ca_key)
        _refuse_other_ca_key(out, args.ca_cert)
        new_ca, ca_from = False, f"CA from {args.ca_cert}"
    elif (out / "ca.crt").exists() or (out / "ca.key").exists():
        ca_cert, ca_key = certs.load_ca(out / "ca.crt", out / "ca.key")
        new_ca, ca_from = False, f"CA kept from {out / 'ca.crt'}"
    else:
        ca_cert, ca_key = certs.generate_ca(key_type=args.key_type)
        new_ca, ca_from = True, "new CA"
    dns = list(dict.fromkeys(certs.service_dns_names(args.service, args.namespace) + extra_dns))
    cert, key = certs.issue_serving_cert(
        ca_cert, ca_key, dns, ips, days=args.days, key_type=args.key_type
    )
    try:
        certs.write_bundle(out, ca_cert, ca_key if new_ca else None, cert, key)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror}") from None
    files = ["ca.crt", *(["ca.key"] if new_ca else []), "tls.crt", "tls.key"]
    print(certs.ca_bundle_b64(ca_cert))
    print(
        f"kubefence certs: wrote {', '.join(files)} to {out} ({ca_from}; {args.key_type} serving"
        f" cert for {dns[2]} and {len(dns) + len(ips) - 1} more names,"
        f" expires {cert.not_valid_after_utc:%F})",
        file=sys.stderr,
    )
    return exitcodes.OK


def _refuse_other_ca_key(out: Path, ca_cert_file: Path) -> None:
    """A ca.key left in --out by another CA would not match the ca.crt written beside it."""
    if (out / "ca.key").exists():
        try:
            certs.load_ca(ca_cert_file, out / "ca.key")
        except InputError as exc:
            raise InputError(f"{exc}; remove it or choose another --out") from None
