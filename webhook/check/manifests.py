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

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from webhook.errors import ManifestError

_HELM_SOURCE = re.compile(r"^# Source: (\S.*)$")


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
    """Every object in `text` (the contents of `file`, or "-" for stdin), in order."""
    lines = text.splitlines()
    objects: list[Located] = []
    notes: list[str] = []
    loader = yaml.SafeLoader(text)
    previous_end = 0  # the line after the previous document: where a `# Source:` may stand
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = loader.construct_document(node)
            line = node.start_mark.line + 1
            template = _helm_source(lines, previous_end, line)
            previous_end = node.end_mark.line
            if doc is None:
                continue
            if not isinstance(doc, Mapping) or not isinstance(doc.get("kind"), str):
                notes.append(f"{file}:{line}: not a Kubernetes object (no kind): skipped")
                continue
            items = doc.get("items")
            if doc["kind"].endswith("List") and "items" in doc:
                if not isinstance(items, list):
                    raise ManifestError(f"{file}:{line}: {doc['kind']}: items must be a list")
                item_nodes = _items_nodes(node)
                for index, item in enumerate(items):
                    at = item_nodes[index].start_mark.line + 1 if index < len(item_nodes) else line
                    if not isinstance(item, Mapping) or not isinstance(item.get("kind"), str):
                        notes.append(f"{file}:{at}: items[{index}] has no kind: skipped")
                        continue
                    objects.append(Located(file, at, item, template))
                continue
            objects.append(Located(file, line, doc, template))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file}:{_line_of(exc)}: invalid YAML: {_problem(exc)}") from None
    finally:
        loader.dispose()
    return Parsed(tuple(objects), tuple(notes))


def _items_nodes(node: yaml.Node) -> list[yaml.Node]:
    """The nodes of a List's `items`, in order: where each item starts."""
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "items":
            return list(value.value) if isinstance(value, yaml.SequenceNode) else []
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
