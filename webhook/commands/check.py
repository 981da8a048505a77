"""`kubefence check PATH... | -`: plain manifests judged as the webhook would judge them.

The I/O shell around `webhook.check`: reads files, folders (recursively: `*.yaml`, `*.yml`,
`*.json`; hidden folders and Helm chart folders are skipped with a note, a chart is checked
through `helm template`) and stdin (`-`, e.g. `helm template` or `kustomize build` output), the
configuration (`--config`) and the base cluster (`--state DIR` or a live cluster, see
`base_cluster`), then prints the report. Exit 0 clean, 1 a finding enforce would deny, 2 bad
input (a file that cannot be read, YAML the parser cannot read: file and line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webhook import exitcodes
from webhook.check.judge import check, placed
from webhook.check.manifests import Located, parse
from webhook.check.render import FORMATS, render
from webhook.cluster.static import load_state
from webhook.cluster.view import StaticView
from webhook.commands import cluster_flags
from webhook.config import load_settings
from webhook.errors import InputError
from webhook.findings.enforce_modes import enforce_settings
from webhook.settings import Settings

HELP = (
    "judge plain manifests (files, folders, - for stdin: helm template, kustomize build) as "
    "the webhook would judge the requests they lead to; -o text, json, sarif or junit"
)
_SUFFIXES = (".yaml", ".yml", ".json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="manifest files or folders (recursively: *.yaml, *.yml, *.json), or - for stdin",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="kubefence config file")
    parser.add_argument(
        "-n",
        "--namespace",
        metavar="NAMESPACE",
        help="the namespace of objects that name none, as kubectl apply -n (default: default)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="text",
        help="text (default), json, sarif (SARIF 2.1.0, for code scanning) or junit (JUnit XML)",
    )
    parser.add_argument(
        "--as-configured",
        action="store_true",
        help="judge with the modes as the config sets them; by default a rule the config sets to "
        "warn or audit whose default is enforce is judged as enforce would judge it",
    )
    add_cluster_arguments(parser)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="folder of cluster manifests the manifests are applied to (default: none)",
    )
    cluster_flags.add_cluster_arguments(
        parser, source, default="none: the manifests alone; with --context, $KUBECONFIG"
    )


def base_cluster(args: argparse.Namespace, settings: Settings) -> StaticView | None:
    """The cluster the manifests are applied to: `--state DIR`, a live cluster read as `scan`
    reads it, or none (the manifests alone). The one place check reads its cluster flags."""
    if args.state is not None:
        if args.context is not None:
            raise InputError("--context names a kubeconfig context: not with --state DIR")
        return load_state(args.state, settings.limits)
    if cluster_flags.named_kubeconfig(args):  # a live cluster: --kubeconfig and/or --context
        from webhook.commands.scan import read_cluster

        view, _, _, _ = read_cluster(cluster_flags.cluster_credentials(args), settings.limits)
        return view
    return None


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    objects: list[Located] = []
    notes: list[str] = []
    files = 0
    for path in args.paths:
        for source, text in _read(path, notes):
            parsed = parse(text, source)
            objects += parsed.objects
            notes += parsed.notes
            files += 1
    objects = placed(objects, args.namespace)
    judging = settings if args.as_configured else enforce_settings(settings)
    base = base_cluster(args, settings)
    report = check(objects, judging, base, notes=notes, files=files)
    sys.stdout.write(render(report, args.output))
    return exitcodes.FINDING if report.denied else exitcodes.OK


def _read(path: str, notes: list[str]) -> list[tuple[str, str]]:
    """(source, text) of every manifest file `path` names; stdin for `-`."""
    if path == "-":
        if sys.stdin.isatty():  # else `kubefence check -` would seem to hang
            print(
                "kubefence check: reading manifests from stdin (end with Ctrl-D)",
                file=sys.stderr,
                flush=True,
            )
        raw = getattr(sys.stdin, "buffer", None)  # the bytes: decoded strictly, as a file is
        try:
            return [("-", raw.read().decode("utf-8") if raw is not None else sys.stdin.read())]
        except UnicodeDecodeError:
            raise InputError("-: not UTF-8 text") from None
    root = Path(path)
    if root.is_dir():
        if (root / "Chart.yaml").is_file():
            raise InputError(
                f"{path}: a Helm chart, not manifests: check it as `helm template {path} | "
                "kubefence check -`"
            )
        files = _manifest_files(root, notes)
        if not files:  # a mistyped or empty folder must not pass as clean
            raise InputError(f"{path}: no *.yaml, *.yml or *.json file below it")
        return [(str(p), _text(p)) for p in files]
    if not root.exists():
        raise InputError(f"{path}: no such file or directory")
    return [(path, _text(root))]


def _manifest_files(root: Path, notes: list[str]) -> list[Path]:
    """The manifest files below `root`, sorted; hidden folders and Helm charts left out (a
    chart's templates are not YAML until rendered)."""
    if (root / "Chart.yaml").is_file():
        notes.append(
            f"{root}: a Helm chart: skipped; check it as `helm template {root} | kubefence check -`"
        )
        return []
    found: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += _manifest_files(entry, notes)
        elif entry.suffix in _SUFFIXES and entry.is_file():
            found.append(entry)
    return found


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
