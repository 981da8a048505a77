"""The real API server judges the `--state` manifest fixtures: kubefence refuses what it refuses.

Each fixture under tests/fixtures/manifests/ (see its README) is one object whose first line says
which way it goes: `# refused: FIELD` (the API server refuses the create, naming FIELD; kubefence
must refuse it too, naming the file and FIELD), `# accepted: why` (both accept it) or
`# lenient: why` (refused on create now, but older API servers stored it: kubefence reads it). The
create is a server-side dry run (`dryRun=All`): validated, admitted, never stored.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kubernetes import client

from webhook.cluster.static import load_state
from webhook.errors import ManifestError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"
REFUSED = sorted((FIXTURES / "refused").glob("*.yaml"))
ACCEPTED = sorted((FIXTURES / "accepted").glob("*.yaml"))
LENIENT = sorted((FIXTURES / "lenient").glob("*.yaml"))


def refused_field(path: Path) -> str:
    head = path.read_text().splitlines()[0]
    assert head.startswith("# refused: "), f"{path}: the first line names the refused field"
    return head.removeprefix("# refused: ")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def names(self) -> str:
        """The Status message and the fields of its causes, as one text to search."""
        causes = (self.body.get("details") or {}).get("causes") or []
        fields = (str(c.get("field", "")) for c in causes)
        return " ".join([str(self.body.get("message", "")), *fields])


def dry_run_create(kube: client.ApiClient, obj: dict[str, Any]) -> Answer:
    """The API server's answer to a POST of `obj` as it is (the typed client would check it
    first) with dryRun=All."""
    namespace = (obj.get("metadata") or {}).get("namespace") or "default"
    path = {
        "Namespace": "/api/v1/namespaces",
        "Pod": f"/api/v1/namespaces/{namespace}/pods",
        "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
    }[obj["kind"]]
    method, url, headers, body, post = kube.param_serialize(
        method="POST",
        resource_path=path,
        query_params=[("dryRun", "All")],
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=obj,
        auth_settings=["BearerToken"],
    )
    response = kube.call_api(method, url, headers, body, post, _request_timeout=30)
    response.read()
    return Answer(response.status, orjson.loads(response.data))


def kubefence_refusal(path: Path, tmp_path: Path) -> str | None:
    shutil.copy(path, tmp_path / path.name)
    try:
        load_state(tmp_path)
    except ManifestError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("path", REFUSED, ids=[p.stem for p in REFUSED])
def test_the_api_server_and_kubefence_both_refuse_it_naming_the_field(
    kube: client.ApiClient, tmp_path: Path, path: Path
) -> None:
    field = refused_field(path)
    answer = dry_run_create(kube, yaml.safe_load(path.read_text()))
    assert answer.status in (400, 422), answer  # bad request (not decodable) or invalid
    # A decoding error names the field without list indices: spec.ingress.ports.port.
    indexless = re.sub(r"\[\d+\]", "", field)
    assert field in answer.names or (answer.status == 400 and indexless in answer.names)
    message = kubefence_refusal(path, tmp_path)
    assert message is not None, f"kubefence accepts {path.name}"
    assert str(tmp_path / path.name) in message
    assert field in message


@pytest.mark.parametrize("path", ACCEPTED, ids=[p.stem for p in ACCEPTED])
def test_the_api_server_and_kubefence_both_accept_it(
    kube: client.ApiClient, tmp_path: Path, path: Path
) -> None:
    answer = dry_run_create(kube, yaml.safe_load(path.read_text()))
    # A validating webhook (kubefence's own, when another test registered it) is called only
    # after the object passed validation: a denial by one still means "accepted" here.
    webhook_denial = answer.status == 403 and "admission webhook" in answer.names
    assert answer.status == 201 or webhook_denial, answer
    assert kubefence_refusal(path, tmp_path) is None


@pytest.mark.parametrize("path", LENIENT, ids=[p.stem for p in LENIENT])
def test_what_only_older_api_servers_stored_kubefence_still_reads(
    kube: client.ApiClient, tmp_path: Path, path: Path
) -> None:
    answer = dry_run_create(kube, yaml.safe_load(path.read_text()))
    assert answer.status == 422, answer
    assert "ipBlock" in answer.names
    assert kubefence_refusal(path, tmp_path) is None
