"""The CheckReport as text, JSON, SARIF 2.1.0 (GitHub code scanning) or JUnit XML (CI reports).

Levels: a finding enforce would deny is an `error` (SARIF) and a JUnit `<failure>`; one it only
warns about is a `warning`, an audit-mode one a `note`, and in JUnit both are the testcase's
`<system-out>`, not failures: the report agrees with check's exit status. One JUnit testcase
per judged object, named by the object, its class the file. Pure: a report in, text out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

from webhook import __version__
from webhook.check.judge import CheckReport, Finding, Judged
from webhook.rules.result import (
    ALLOW_ALL,
    AUDIT_SCOPE,
    DEFAULT_DENY,
    HOST_NETWORK,
    NAMESPACE_LABELS,
)

FORMATS = ("text", "json", "sarif", "junit")
SARIF_VERSION = "2.1.0"
# What each rule checks, for SARIF's rule descriptors (README's first section says it at length).
RULES: Mapping[str, str] = {
    DEFAULT_DENY: "A workload may only be created in a namespace fenced by a default-deny "
    "NetworkPolicy for every required direction.",
    ALLOW_ALL: "A NetworkPolicy may not neutralise a fence by letting every peer in.",
    HOST_NETWORK: "A Pod may not leave its network namespace or reach the node (hostNetwork, "
    "hostPID, privileged, node capabilities, probe hosts, sensitive hostPaths).",
    AUDIT_SCOPE: "A workload change must be recorded by the cluster's audit Policy.",
    NAMESPACE_LABELS: "A namespace label that allow rules trust may not change unseen.",
}
_LEVELS = {"enforce": "error", "warn": "warning", "audit": "note"}


def render(report: CheckReport, output: str) -> str:
    if output == "json":
        return json.dumps(to_json(report), indent=2) + "\n"
    if output == "sarif":
        return json.dumps(to_sarif(report), indent=2) + "\n"
    if output == "junit":
        return to_junit(report)
    return to_text(report)


def _where(judged: Judged) -> str:
    at = f"{judged.file}:{judged.line}"
    return f"{at} ({judged.template})" if judged.template else at


def to_text(report: CheckReport) -> str:
    lines: list[str] = []
    fixed: dict[str, str] = {}  # a fix printed already -> where: a namespace's is printed once
    for judged in report.judged:
        for finding in judged.findings:
            level = "denied" if finding.denies else _LEVELS[finding.mode]
            lines.append(
                f"{_where(judged)}: {judged.label}: {finding.rule} ({level}): "
                + _indented(finding.message, first="")
            )
            lines.append(f"    on: {finding.request}")
            if finding.fix in fixed:
                lines.append(f"    fix: as for {fixed[finding.fix]}")
            elif finding.fix:
                fixed[finding.fix] = f"{judged.label} above"
                lines.append("    fix: " + _indented(finding.fix, first="", by="      "))
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.ignored:
        kinds = ", ".join(f"{kind} ({n})" for kind, n in sorted(report.ignored.items()))
        lines.append(f"note: not judged (kinds kubefence has no rule for): {kinds}")
    exempt = [j for j in report.judged if j.exempt and not j.findings]
    for judged in exempt:
        lines.append(f"note: {_where(judged)}: {judged.label}: not judged: {judged.exempt}")
    objects = len(report.judged)
    lines.append(
        f"{objects} object{'s' if objects != 1 else ''} judged in {report.files} "
        f"file{'s' if report.files != 1 else ''}: {_summary(report)}"
    )
    return "\n".join(lines) + "\n"


def _summary(report: CheckReport) -> str:
    if not report.findings:
        return "no findings"
    others = report.findings - report.denied
    parts = [f"{report.denied} would be denied"]
    if others:
        parts.append(f"{others} warning{'s' if others != 1 else ''}")
    return ", ".join(parts)


def _indented(text: str, *, first: str, by: str = "    ") -> str:
    head, *rest = text.split("\n")
    return "\n".join([first + head, *(by + line for line in rest)])


def _finding_json(judged: Judged, finding: Finding) -> dict[str, Any]:
    return {
        "file": judged.file,
        "line": judged.line,
        "template": judged.template,
        "kind": judged.kind,
        "namespace": judged.namespace,
        "name": judged.name,
        "rule": finding.rule,
        "mode": finding.mode,
        "denies": finding.denies,
        "message": finding.message,
        "fix": finding.fix,
        "request": finding.request,
    }


def to_json(report: CheckReport) -> dict[str, Any]:
    return {
        "findings": [_finding_json(j, f) for j in report.judged for f in j.findings],
        "objects": len(report.judged),
        "files": report.files,
        "denied": report.denied,
        "exempt": [
            {"file": j.file, "line": j.line, "object": j.label, "reason": j.exempt}
            for j in report.judged
            if j.exempt
        ],
        "ignored": dict(sorted(report.ignored.items())),
        "notes": list(report.notes),
    }


def to_sarif(report: CheckReport) -> dict[str, Any]:
    """One run of the `kubefence` tool; each finding a result at its object's first line."""
    used = sorted({f.rule for j in report.judged for f in j.findings} | set(RULES))
    index = {rule: i for i, rule in enumerate(used)}
    rules = [
        {
            "id": rule,
            "name": rule,
            "shortDescription": {"text": RULES.get(rule, rule)},
            "defaultConfiguration": {"level": "error"},
        }
        for rule in used
    ]
    results = []
    for judged in report.judged:
        for finding in judged.findings:
            text = finding.message + (f"\nFix: {finding.fix}" if finding.fix else "")
            results.append(
                {
                    "ruleId": finding.rule,
                    "ruleIndex": index[finding.rule],
                    "level": "error" if finding.denies else _LEVELS[finding.mode],
                    "message": {"text": f"{judged.label}: {text}"},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {"uri": _uri(judged.file)},
                                "region": {"startLine": judged.line},
                            },
                            "logicalLocations": [
                                {"name": judged.label, "kind": "object"},
                            ],
                        }
                    ],
                    "properties": {"request": finding.request, "mode": finding.mode},
                }
            )
    return {
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {"name": "kubefence", "version": __version__, "rules": rules},
                },
                "results": results,
            }
        ],
    }


def _uri(file: str) -> str:
    """A relative URI reference: the path with forward slashes; stdin as `stdin`."""
    if file == "-":
        return "stdin"
    path = file.replace("\\", "/")
    return path[2:] if path.startswith("./") else path


def to_junit(report: CheckReport) -> str:
    suite = ElementTree.Element(
        "testsuite",
        {
            "name": "kubefence check",
            "tests": str(len(report.judged)),
            "failures": str(sum(1 for j in report.judged if any(f.denies for f in j.findings))),
            "errors": "0",
            "skipped": str(sum(1 for j in report.judged if j.exempt)),
        },
    )
    for judged in report.judged:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            {"classname": judged.file, "name": f"{judged.label} (line {judged.line})"},
        )
        if judged.exempt and not judged.findings:
            ElementTree.SubElement(case, "skipped", {"message": judged.exempt})
        out: list[str] = []
        for finding in judged.findings:
            text = finding.message + (f"\nFix: {finding.fix}" if finding.fix else "")
            if finding.denies:
                failure = ElementTree.SubElement(
                    case,
                    "failure",
                    {"type": finding.rule, "message": finding.message.split("\n")[0]},
                )
                failure.text = f"{_where(judged)}: {text}\n(on: {finding.request})"
            else:
                out.append(f"{finding.rule} ({_LEVELS[finding.mode]}): {text}")
        if out:
            ElementTree.SubElement(case, "system-out").text = "\n".join(out)
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, "unicode") + "\n"
