"""What README.md and docs/*.md name exists: every `kubefence <command> --flag` is a flag of that
command, every chart value is a key of charts/kubefence/values.yaml, and the defaults the values
table gives are the ones values.yaml has.

A flag counts as the docs naming it for a command when it stands in a command line or an inline
code span that starts with `kubefence <command>` (up to a pipe or `&&`), in a table row whose first
cell is `kubefence <command>`, under a heading that names `kubefence <command>`, or in the flag
table of a command's own page (docs/scan.md, docs/correlate.md). Other programs' flags (helm,
kubectl, kube-apiserver) are never attributed to kubefence.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.cli import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
VALUES = yaml.safe_load((REPO / "charts" / "kubefence" / "values.yaml").read_text())
SCHEMA = json.loads((REPO / "charts" / "kubefence" / "values.schema.json").read_text())
# Prose that names a chart value: "the chart's `webhook.breakGlassGroup`", "value `mode`".
_CHART_VALUE = re.compile(r"(?:chart's|values?) `([a-z][A-Za-z]*(?:\.[a-z][A-Za-z]*)*)`")
# The page about one command: its flag table names that command's flags.
COMMAND_PAGES = {"scan.md": "scan", "correlate.md": "correlate", "check.md": "check"}

_CODE_SPAN = re.compile(r"`([^`]+)`")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
_COMMAND = re.compile(r"\bkubefence ([a-z][a-z-]*)(?: ([a-z]+))?")
_SHELL_BREAK = re.compile(r"\s(?:\||&&|;|<|>)\s|\s[<>]\(")


def flags_of(command: list[str]) -> set[str]:
    """The long options of `kubefence <command>` (and its sub-action, e.g. `certs generate`)."""
    parser = build_parser(command[:1])
    for word in command:
        parser = _subparser(parser, word)
    return {o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]  # type: ignore[no-any-return]
    return parser


def _command_of(text: str) -> list[str] | None:
    """[command] or [command, action] when `text` starts with a kubefence invocation."""
    found = _COMMAND.match(text.lstrip("$ ").strip())
    if found is None or found.group(1) not in COMMANDS:
        return None
    action = found.group(2)
    if action is not None and action in _actions_of(found.group(1)):
        return [found.group(1), action]
    return [found.group(1)]


def _actions_of(command: str) -> set[str]:
    parser = build_parser([command])
    sub = _subparser(parser, command)
    return {
        name
        for a in sub._actions
        if isinstance(a, argparse._SubParsersAction)
        for name in a.choices
    }


def _flags_in(text: str) -> set[str]:
    return set(_FLAG.findall(text))


def _kubefence_part(text: str) -> str:
    """The text up to the first pipe, `&&`, `;` or redirection: what kubefence receives."""
    return _SHELL_BREAK.split(text, maxsplit=1)[0]


def attributed(path: Path) -> Iterator[tuple[int, list[str], str]]:
    """(line number, command, flag) for every flag the page names for a kubefence command."""
    section: list[str] | None = None
    page_command = COMMAND_PAGES.get(path.name)
    pending, pending_at, carry = "", 0, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            carry = ""  # a code span never crosses a paragraph
        if line.startswith("#"):
            heading = _CODE_SPAN.findall(line)
            section = _command_of(heading[0]) if heading else None
            continue
        if line.startswith("    ") or pending:  # a command line of a code block
            text = pending + line.strip()
            if text.endswith("\\"):
                pending, pending_at = text[:-1] + " ", pending_at or number
                continue
            start, pending, pending_at = pending_at or number, "", 0
            command = _command_of(text)
            if command is not None:
                for flag in _flags_in(_kubefence_part(text)):
                    yield start, command, flag
            continue
        cells: list[str] = []
        row_command = None
        text = line
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            first = _CODE_SPAN.findall(cells[0])
            row_command = _command_of(first[0]) if first else None
        else:
            # A code span may run onto the next line: carry its start over.
            text, carry = carry + line, ""
            if text.count("`") % 2:
                cut = text.rindex("`")
                text, carry = text[:cut], text[cut:] + " "
        for span in _CODE_SPAN.findall(text):
            command = _command_of(span)
            if command is not None:
                for flag in _flags_in(_kubefence_part(span)):
                    yield number, command, flag
            elif span.startswith("--"):
                owner = row_command or section
                if owner is None and page_command and cells and span in cells[0]:
                    owner = [page_command]  # the first cell of the page's flag table
                if owner is not None:
                    for flag in _flags_in(span):
                        yield number, owner, flag


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_flag_the_docs_name_exists(path: Path) -> None:
    wrong = [
        f"{path.name}:{n}: kubefence {' '.join(cmd)} has no --{flag}"
        for n, cmd, flag in attributed(path)
        if flag not in flags_of(cmd) | {"help"}
    ]
    assert wrong == []


def test_the_docs_name_flags_at_all() -> None:
    """The parser above sees the docs: many flags of many commands (so the test cannot pass by
    finding nothing)."""
    found = {(tuple(c), f) for p in DOCS for _, c, f in attributed(p)}
    commands = {c for c, _ in found}
    assert {("serve",), ("review",), ("scan",), ("correlate",), ("audit-level",)} <= commands
    assert (("certs", "generate"), "san") in found
    assert (("correlate",), "audit-log") in found
    assert (("scan",), "format") in found
    assert len(found) > 40


def test_a_wrong_flag_would_be_caught(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(
        "    kubefence scan --kubeconfig k --fixx | kubectl apply -f -\n"
        "| `kubefence review [FILE]` | `--stat DIR` |\n"
        "## `kubefence correlate`\n"
        "`--audit-logs FILE` joins\n"
    )
    wrong = {(tuple(c), f) for _, c, f in attributed(page) if f not in flags_of(c)}
    assert wrong == {(("scan",), "fixx"), (("review",), "stat"), (("correlate",), "audit-logs")}


_SEVERAL = re.compile(r"--([a-z][a-z0-9-]*) [A-Z][A-Z_.-]*\.\.\.")


def test_a_flag_is_shown_taking_several_values_only_when_it_does() -> None:
    """`--audit-log FILE...` read as one flag with several files; the flag must be repeated."""
    wrong = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for found in _SEVERAL.finditer(text):
            line = text.count("\n", 0, found.start()) + 1
            for _, command, flag in attributed(path):
                if flag != found.group(1):
                    continue
                action = _action(command, flag)
                if action is not None and action.nargs not in ("+", "*"):
                    wrong.append(f"{path.name}:{line}: --{flag} takes one value (repeat it)")
                    break
    assert wrong == []


def _action(command: list[str], flag: str) -> argparse.Action | None:
    parser = build_parser(command[:1])
    for word in command:
        parser = _subparser(parser, word)
    return next((a for a in parser._actions if f"--{flag}" in a.option_strings), None)


def test_the_chart_cites_only_documents_users_have() -> None:
    """values.yaml once cited a design document that is not in the repository."""
    cited = []
    for path in sorted((REPO / "charts").rglob("*")):
        if path.is_file():
            for name in re.findall(r"[\w./-]+\.md\b", path.read_text(encoding="utf-8")):
                cited.append((path.relative_to(REPO), name))
    assert cited
    assert [(p, n) for p, n in cited if not (REPO / n).is_file()] == []


# --- chart values ----------------------------------------------------------------------------------


def _has_path(values: Any, dotted: str) -> bool:
    node = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def in_chart(dotted: str) -> bool:
    """A key of values.yaml, or one its schema allows (`config.overrides` under `config: {}`)."""
    if _has_path(VALUES, dotted):
        return True
    node: Any = SCHEMA
    for key in dotted.split("."):
        properties = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(properties, dict) or key not in properties:
            return False
        node = properties[key]
    return True


def _value(dotted: str) -> Any:
    node: Any = VALUES
    for key in dotted.split("."):
        node = node[key]
    return node


def values_table() -> list[tuple[int, list[str], list[str]]]:
    """(line, value keys, default cells) of docs/deploy.md's values table; `.tag` after
    `image.repository` is `image.tag`."""
    rows = []
    lines = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8").splitlines()
    inside = False
    for number, line in enumerate(lines, start=1):
        if line.startswith("| value | default |"):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if not inside or line.startswith("| ---"):
            continue
        first, default = [c.strip() for c in line.strip("|").split("|")][:2]
        keys: list[str] = []
        for name in _CODE_SPAN.findall(first):
            keys.append(keys[-1].rsplit(".", 1)[0] + name if name.startswith(".") else name)
        rows.append((number, keys, _CODE_SPAN.findall(default)))
    return rows


def test_every_chart_value_the_docs_name_exists() -> None:
    named: list[tuple[str, int, str]] = [
        ("deploy.md", n, key) for n, keys, _ in values_table() for key in keys
    ]
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for words in _helm_lines(line):
                named += [(path.name, number, key) for key in _set_keys(words)]
            named += [(path.name, number, key) for key in _CHART_VALUE.findall(line)]
    assert len(named) > 50
    missing = [f"{f}:{n}: {key}" for f, n, key in named if not in_chart(key)]
    assert missing == []


def test_every_value_is_in_the_values_table() -> None:
    documented = {key for _, keys, _ in values_table() for key in keys}
    leaves = {
        f"{top}.{key}" if isinstance(VALUES[top], dict) and VALUES[top] else top
        for top in VALUES
        for key in (VALUES[top] if isinstance(VALUES[top], dict) and VALUES[top] else [None])
    }
    covered = {leaf for leaf in leaves if leaf in documented or leaf.split(".")[0] in documented}
    # Nested sections documented by their own keys (certs.generated.days) count for their parent.
    covered |= {leaf for leaf in leaves if any(d.startswith(leaf + ".") for d in documented)}
    assert sorted(leaves - covered) == []


def test_the_values_table_gives_the_defaults_values_yaml_has() -> None:
    """Only literal defaults are compared (`true`, `5`, `[]`, `""`); "required", "appVersion"
    and prose are read by people."""
    wrong = []
    for number, keys, defaults in values_table():
        if len(defaults) != len(keys):
            continue  # one default for several keys, or prose
        for key, shown in zip(keys, defaults, strict=True):
            try:
                literal = yaml.safe_load(shown)
            except yaml.YAMLError:
                continue
            if isinstance(literal, str) and literal != "" and " " in literal:
                continue
            if literal != _value(key):
                wrong.append(
                    f"deploy.md:{number}: {key}: docs {shown}, values.yaml {_value(key)!r}"
                )
    assert wrong == []


def _helm_lines(line: str) -> Iterator[list[str]]:
    for text in (line.strip(), *_CODE_SPAN.findall(line)):
        if text.startswith("helm ") and ("install" in text or "upgrade" in text):
            try:
                yield shlex.split(text.replace("…", "").rstrip("\\"))
            except ValueError:
                continue


def _set_keys(words: list[str]) -> Iterator[str]:
    for flag, value in itertools.pairwise(words):
        if flag in ("--set", "--set-file", "--set-string") and "=" in value:
            yield value.split("=", 1)[0]


# --- the README's examples, run literally --------------------------------------------------------


def test_the_readme_first_command_makes_a_virtualenv_in_one_line() -> None:
    """A newcomer copies the first command whole: one line that makes and enters a virtualenv
    (a distribution's Python refuses `pip install` outside one), installs, then runs the demo,
    each step only if the one before worked; beside it, the Python it needs, as pyproject says."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Two commands\n")[1]
    command = section.split("\n\n    ", 1)[1].split("\n", 1)[0]
    steps = command.split(" && ")
    assert steps[0].startswith("python3 -m venv ")
    venv = steps[0].removeprefix("python3 -m venv ")
    assert steps[1:] == [f". {venv}/bin/activate", "pip install -e .", "kubefence demo"]
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    (minimum,) = re.findall(r'^requires-python = ">=(\d+\.\d+)"$', pyproject, re.M)
    before = section.split("\n\n    ")[0]
    assert f"Python {minimum} or newer" in " ".join(before.split())


def test_the_readme_audit_level_example_prints_what_it_shows(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `$ kubefence audit-level ...` example, from the repository root, prints its next line."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("    $ kubefence audit-level")]
    command, i = "", start
    while True:
        command += lines[i].strip().removeprefix("$ ")
        if not command.endswith("\\"):
            break
        command, i = command[:-1] + " ", i + 1
    shown = lines[i + 1].strip()
    monkeypatch.chdir(REPO)
    assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out.strip() == shown


def test_the_readme_audit_level_prose_names_the_rule_its_example_prints() -> None:
    """The paragraph after the example explains the `"rule": N` the example prints, not another."""
    section = (
        (REPO / "README.md").read_text(encoding="utf-8").split("## `kubefence audit-level`")[1]
    )
    example, _, prose = section.partition("\n\n    $ ")[2].partition("\n\n")
    shown = json.loads(example.splitlines()[-1])
    named = re.findall(r'`"rule": (\d+)` is `rules\[(\d+)\]`', prose)
    assert named == [(str(shown["rule"]), str(shown["rule"]))]


def test_the_layout_names_every_module() -> None:
    """README's Layout is the map a newcomer reads first: every module of `webhook/` is on it,
    either by its path or by its name under its folder's line."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    entries = [line.split()[0] for line in layout.splitlines() if line.startswith("    ")]
    missing = []
    for module in sorted((REPO / "webhook").rglob("*.py")):
        rel = module.relative_to(REPO).as_posix()
        if module.name == "__init__.py" and rel != "webhook/rules/__init__.py":
            continue
        folder = module.parent.relative_to(REPO).as_posix() + "/"
        under_folder = folder in entries and module.name in entries[entries.index(folder) :]
        # Two folders are named whole: the audit Policy package, and one module per command.
        command = folder == "webhook/commands/" and module.stem.replace("_", "-") in COMMANDS
        if not (rel in entries or under_folder or command or folder == "webhook/auditpolicy/"):
            missing.append(rel)
    assert missing == []


# --- links and citations -------------------------------------------------------------------------

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
# What the repository's own files may not cite: the design notes that once lived outside it.
_OUTSIDE_DOC = re.compile(r"\bDESIGN(?:\.md\b|\s*§|\s+\")|\bKUBERNETES-FACTS\b")
# A section cited from code: docs/design.md, "Trust model" (or without the comma).
_SECTION_CITE = re.compile(r"(docs/[\w-]+\.md),?\s+\"([^\"]+)\"")
# Generated or installed, not the repository's own text (.gitignore's folders).
_NOT_OURS = frozenset(
    [".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"]
)


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped,
    spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^(```|~~~).*?^\1", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_anchor(h) for h in _HEADING.findall(text)}


def _headings(path: Path) -> set[str]:
    return {h.strip() for h in _HEADING.findall(path.read_text(encoding="utf-8"))}


def _our_files() -> Iterator[Path]:
    for path in sorted(REPO.rglob("*")):
        parts = path.relative_to(REPO).parts
        if path.is_file() and not _NOT_OURS.intersection(parts) and not parts[-1].endswith(".pyc"):
            yield path


def broken_links(path: Path) -> list[str]:
    """The relative links of one Markdown file whose file, or whose #anchor, does not exist."""
    broken = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{path.name}: {target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in _anchors(linked):
            broken.append(f"{path.name}: {target}: no such heading")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_that_exists(path: Path) -> None:
    assert broken_links(path) == []


def test_the_readme_links_the_design_and_the_kubernetes_facts() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    for doc in ("docs/design.md", "docs/kubernetes-facts.md"):
        assert f"]({doc})" in readme.split("\n## ", 1)[0], doc  # the introduction
        assert f"]({doc})" in layout, doc


def test_a_broken_link_would_be_caught(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#a-heading) [web](https://example.invalid/x) [self](#top)\n# Top\n"
        "[gone](missing.md) [no heading](there.md#another)\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md: missing.md: no such file",
        "page.md: there.md#another: no such heading",
    ]


def test_no_file_cites_the_design_notes_outside_the_repository() -> None:
    """Code and docs once cited design notes kept beside the project; a clone cannot follow
    those. The design is docs/design.md, the upstream behaviours docs/kubernetes-facts.md."""
    citing = []
    for path in _our_files():
        text = path.read_text(encoding="utf-8", errors="ignore")
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE_DOC.search(line):
                citing.append(f"{path.relative_to(REPO)}:{number}")
    assert citing == []
    assert _OUTSIDE_DOC.search("see " + "DESIGN" + ".md §2")  # the pattern can fail


def test_every_section_the_code_cites_exists() -> None:
    """A comment citing `docs/design.md, "Trust model"` names a heading that page has."""
    cited = []
    for path in _our_files():
        text = re.sub(r"\s*\n\s*#?\s*", " ", path.read_text(encoding="utf-8", errors="ignore"))
        for doc, section in _SECTION_CITE.findall(text):
            cited.append((path.relative_to(REPO).as_posix(), doc, section))
    assert {"docs/design.md", "docs/kubernetes-facts.md"} <= {doc for _, doc, _ in cited}
    missing = [
        c for c in cited if not (REPO / c[1]).is_file() or c[2] not in _headings(REPO / c[1])
    ]
    assert missing == []
