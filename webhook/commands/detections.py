"""`kubefence detections`: kubefence's single-event detections as Sigma rules for a SIEM.

The I/O shell around `webhook.correlate.sigma`: reads the config (webhook names, exemptions, the
drift section naming kubefence's admission objects) as `correlate` does, and writes the rules as
YAML, all on stdout or one file per rule into `--out DIR`. Exit 0, or 2 for bad flags or config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from webhook.commands.running import (
    add_probing_arguments,
    add_webhook_name_argument,
    detection_options,
    positive_int,
)
from webhook.config import load_settings
from webhook.correlate.sigma import Guarded, SigmaRule, sigma_rules
from webhook.correlate.sigma_fields import DEFAULT_WEBHOOK_SLOTS
from webhook.errors import InputError

HELP = (
    "write kubefence's detections (bypass, sensitive access, fence removal, a change to its "
    "webhook configuration, probing) as Sigma rules for a SIEM, from the config correlate reads"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("sigma",),
        default="sigma",
        help="the rule format (Sigma: pySigma and sigma-cli convert it for each SIEM)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="kubefence config file (webhook names, exemptions, the drift section)",
    )
    add_webhook_name_argument(parser)
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write one file per rule, NAME.yml, into this folder (created if missing); "
        "default: every rule on stdout as one YAML stream",
    )
    parser.add_argument(
        "--webhook-slots",
        type=positive_int("webhooks"),
        metavar="N",
        default=DEFAULT_WEBHOOK_SLOTS,
        help="the failed-open annotation's key is the webhook's place among those the API server "
        "calls (round_0_index_0, ...): match the first N places",
    )
    add_probing_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    options = detection_options(args, settings)
    drift = settings.drift
    guarded = (
        Guarded(
            (drift.webhook_configuration,),
            (drift.admission_policy,) if drift.admission_policy else (),
            (drift.binding,) if drift.binding else (),
        )
        if drift is not None
        else Guarded()
    )
    rules = sigma_rules(options, guarded, webhook_slots=args.webhook_slots)
    if args.out is None:
        sys.stdout.write(_yaml(rules))
        return 0
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{out}: not a folder") from None
    except OSError as exc:
        raise InputError(f"{out}: cannot create: {exc.strerror or exc}") from None
    for rule in rules:
        path = out / f"{rule.name}.yml"
        try:
            path.write_text(_yaml((rule,)), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
        print(path)
    return 0


def _yaml(rules: tuple[SigmaRule, ...]) -> str:
    docs = [doc for rule in rules for doc in rule.documents]
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=100)
