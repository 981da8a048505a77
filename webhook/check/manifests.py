"""Manifest text into Kubernetes objects, each with the file and line where it starts.

What `kubectl apply -f` reads: YAML with any number of documents (`---`), JSON (a JSON document
is YAML), and Lists (`kind: List`, or any kind ending in `List` with `items`), whose items are
objects of their own. The line of an object is the line of its first key as the YAML parser
marks it (a List's item: the item's own first key), so a finding points at the object, not at
its `---`. `helm template` writes a `# Source: chart/templates/x.yaml` comment above each
document: it is kept as the object's `template`, to say where a rendered object came from.

A document that is not a mapping with a `kind` (a Helm values file, a CI workflow next to the
manifests) is not an object: it is skipped with a note, as an unknown kind is. Text the YAML
parser cannot read is a ManifestError naming the file and line. Pure: text in, objects out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from webhook.errors import ManifestError

_HELM_SOURCE = re.compile(r"^# Source: (\S.*)$")
# libyaml's loader where PyYAML was built with it (about 6 times faster), the same marks.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Located:
    """One object of a manifest: where it starts (`file`, 1-based `line`) and what it is."""

    file: str
    line: int
    object: Mapping[str, Any]
    template: str = ""  # the `# Source:` of `helm template` output, when there is one


@dataclass(frozen=True, slots=True)
class Parsed:
    objects: tuple[Located, ...]
    notes: tuple[str, ...]  # documents skipped, each naming file and line


def parse(text: str, file: str) -> Parsed:
    """Every object in `text` (the contents of `file`, or "-" for stdin), in order.

    A JSON document is read by the JSON parser (YAML 1.1 reads some JSON differently: `1e3` is a
    string to it) and its lines are taken from the YAML parser's marks of the same text, with
    tabs read as the spaces they are in JSON: a literal tab can only stand between tokens there.
    """
    as_json = _json_document(text)
    if as_json is None:
        return _parse_yaml(text, file)
    try:
        return _parse_yaml(text.replace("\t", " "), file, list(as_json))
    except ManifestError:  # JSON the YAML parser cannot mark: every object at line 1
        objects, notes = _objects_of(as_json[0], file, 1, item_lines=[], template="")
        return Parsed(tuple(objects), tuple(notes))


def _json_document(text: str) -> list[Any] | None:
    """`text` as the one JSON value it is (in a list), or None when it is not JSON."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return [json.loads(text)]
    except ValueError:
        return None


def _parse_yaml(text: str, file: str, values: list[Any] | None = None) -> Parsed:
    """The objects of `text`; with `values`, the documents' values are those (JSON's), and the
    YAML parser only marks where each starts."""
    lines = text.splitlines()
    objects: list[Located] = []
    notes: list[str] = []
    loader = _LOADER(text)
    previous_end = 0  # the line after the previous document: where a `# Source:` may stand
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = loader.construct_document(node)
            if values is not None:
                doc = values.pop(0) if values else None
            line = node.start_mark.line + 1
            template = _helm_source(lines, previous_end, line)
            previous_end = node.end_mark.line
            if doc is not None:
                found, skipped = _objects_of(
                    doc, file, line, item_lines=_items_lines(node), template=template
                )
                objects += found
                notes += skipped
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file}:{_line_of(exc)}: invalid YAML: {_problem(exc)}") from None
    finally:
        loader.dispose()
    return Parsed(tuple(objects), tuple(notes))


def _objects_of(
    doc: object, file: str, line: int, *, item_lines: list[int], template: str
) -> tuple[list[Located], list[str]]:
    """One document's objects (a List's items one by one) and notes of what is no object."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("kind"), str):
        return [], [f"{file}:{line}: not a Kubernetes object (no kind): skipped"]
    if not (doc["kind"].endswith("List") and "items" in doc):
        return [Located(file, line, doc, template)], []
    objects: list[Located] = []
    notes: list[str] = []
    items = doc.get("items")
    if not isinstance(items, list):
        raise ManifestError(f"{file}:{line}: {doc['kind']}: items must be a list")
    for index, item in enumerate(items):
        at = item_lines[index] if index < len(item_lines) else line
        if not isinstance(item, Mapping) or not isinstance(item.get("kind"), str):
            notes.append(f"{file}:{at}: items[{index}] has no kind: skipped")
            continue
        objects.append(Located(file, at, item, template))
    return objects, notes


def _items_lines(node: yaml.Node) -> list[int]:
    """The first line of each item of a List's `items`, in order."""
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if (
            isinstance(key, yaml.ScalarNode)
            and key.value == "items"
            and isinstance(value, yaml.SequenceNode)
        ):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _helm_source(lines: list[str], start: int, line: int) -> str:
    """The last `# Source:` comment between the previous document and this one's first line."""
    for text in reversed(lines[start : max(start, line - 1)]):
        found = _HELM_SOURCE.match(text.strip())
        if found:
            return found.group(1)
    return ""


def _line_of(exc: yaml.YAMLError) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else 1


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem and context:
        return f"{problem} ({context})"
    return str(problem or context or exc.__class__.__name__)
