"""`--state` manifests: what the API server would refuse is refused, naming the file and field.

The fixtures are the ones the e2e suite has the real API server judge
(tests/e2e/test_manifest_refusals.py); here kubefence's side runs alone, through `scan --state`
as a user runs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from webhook.cli import main
from webhook.cluster.static import load_state

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"
REFUSED = sorted((FIXTURES / "refused").glob("*.yaml"))
READ = sorted([*(FIXTURES / "accepted").glob("*.yaml"), *(FIXTURES / "lenient").glob("*.yaml")])


def _state_of(path: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("path", REFUSED, ids=[p.stem for p in REFUSED])
def test_scan_refuses_it_in_one_line_naming_the_file_and_field(
    tmp_path: Path, path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    field = path.read_text().splitlines()[0].removeprefix("# refused: ")
    folder = _state_of(path, tmp_path)
    assert main(["scan", "--state", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err.removesuffix("\n")
    assert "\n" not in line
    assert line.startswith(f"kubefence scan: {folder / path.name}: document 1: ")
    assert f": {field}" in line


@pytest.mark.parametrize("path", READ, ids=[f"{p.parent.name}-{p.stem}" for p in READ])
def test_what_the_api_server_stores_is_read(tmp_path: Path, path: Path) -> None:
    view = load_state(_state_of(path, tmp_path))
    assert view.names()


def test_a_refusal_in_a_list_names_the_item(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - {apiVersion: v1, kind: Namespace, metadata: {name: shop}}\n"
        "  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n"
        "    metadata: {name: deny, namespace: shop}\n    spec: {policyTypes: Ingress}\n"
    )
    with pytest.raises(Exception, match=r"list\.yaml: document 1: items\[1\]: NetworkPolicy deny: "
                       r"spec\.policyTypes: must be a list, e\.g\. \[Ingress\], not a string"):  # fmt: skip
        load_state(tmp_path)


@pytest.mark.parametrize("files", [{}, {"notes.yaml": "# only a comment\n", "cm.yaml": "kind: ConfigMap\nmetadata: {name: x}\n"}])  # fmt: skip
def test_a_folder_with_no_namespace_policy_or_pod_is_said_to_be_an_empty_cluster(
    tmp_path: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["scan", "--state", str(tmp_path), "--format", "json"]) == 0  # and scan still runs
    err = capsys.readouterr().err
    assert err == (
        f"kubefence: warning: {tmp_path}: no Namespace, NetworkPolicy or Pod in any *.yaml, *.yml"
        " or *.json file: an empty cluster, where no namespace is fenced\n"
    )


def test_a_folder_with_one_namespace_is_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    main(["scan", "--state", str(tmp_path)])
    assert capsys.readouterr().err == ""
