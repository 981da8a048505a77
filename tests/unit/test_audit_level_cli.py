"""`kubefence audit-level`: flags or JSONL in, one JSON result per request out, 2 on bad input."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from webhook.cli import main

REPO = Path(__file__).resolve().parents[2]

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [Panic]
rules:
- level: None
  nonResourceURLs: ["/healthz*"]
- level: None
  users: ["system:kube-proxy"]
- level: RequestResponse
  userGroups: [ops]
  verbs: [get]
  resources: [{group: "", resources: ["pods/*"]}]
- level: Request
  resources: [{group: apps, resources: [deployments]}]
  omitStages: [RequestReceived]
  omitManagedFields: true
- level: Metadata
"""


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "audit-policy.yaml"
    path.write_text(POLICY)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[object], str]:
    code = main(["audit-level", *argv])
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err


def result(level: str, rule: int | None, stages: list[str], omf: bool = False) -> object:
    return {"level": level, "rule": rule, "omitStages": stages, "omitManagedFields": omf}


def test_one_request_from_flags(capsys: pytest.CaptureFixture[str], policy: str) -> None:
    code, out, err = run(
        capsys,
        "--policy",
        policy,
        "--user",
        "alice",
        "--group",
        "dev",
        "--group",
        "ops",
        "--verb",
        "get",
        "--resource",
        "pods",
        "--namespace",
        "default",
        "--name",
        "web",
    )
    assert (code, out, err) == (0, [result("RequestResponse", 2, ["Panic"])], "")


def test_stages_are_listed_in_request_order(
    capsys: pytest.CaptureFixture[str], policy: str
) -> None:
    code, out, _ = run(
        capsys,
        "--policy",
        policy,
        "--verb",
        "create",
        "--api-group",
        "apps",
        "--resource",
        "deployments",
        "--namespace",
        "default",
    )
    assert (code, out) == (0, [result("Request", 3, ["RequestReceived", "Panic"], omf=True)])


def test_no_user_is_unauthenticated(capsys: pytest.CaptureFixture[str], policy: str) -> None:
    code, out, _ = run(capsys, "--policy", policy, "--verb", "get", "--resource", "pods")
    assert (code, out) == (0, [result("Metadata", 4, ["Panic"])])


def test_path_alone_is_a_non_resource_request(
    capsys: pytest.CaptureFixture[str], policy: str
) -> None:
    _, alone, _ = run(capsys, "--policy", policy, "--verb", "get", "--path", "/healthz/ready")
    _, with_resource, _ = run(
        capsys, "--policy", policy, "--verb", "get", "--path", "/healthz", "--resource", "pods"
    )
    assert alone == [result("None", 0, ["Panic"])]
    assert with_resource == [result("Metadata", 4, ["Panic"])]


def test_no_matching_rule(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted]\n"
        "rules: [{level: Metadata, verbs: [create]}]\n"
    )
    code, out, _ = run(capsys, "--policy", str(path), "--verb", "get", "--resource", "pods")
    assert (code, out) == (0, [result("None", None, ["ResponseStarted"])])


LINES: list[dict[str, object]] = [
    {"user": "system:kube-proxy", "verb": "watch", "resource": "endpoints"},
    {"verb": "get", "path": "/healthz"},
    {"user": "bob", "groups": ["ops"], "verb": "get", "resource": "pods", "subresource": "log"},
    {"verb": "get", "path": "/healthz", "resourceRequest": True},
    {
        "user": "bob",
        "verb": "list",
        "apiGroup": "apps",
        "apiVersion": "v1",
        "resource": "deployments",
        "namespace": "",
        "name": "",
        "resourceRequest": True,
    },
]
EXPECTED = [
    result("None", 1, ["Panic"]),
    result("None", 0, ["Panic"]),
    result("RequestResponse", 2, ["Panic"]),
    result("Metadata", 4, ["Panic"]),
    result("Request", 3, ["RequestReceived", "Panic"], omf=True),
]


def jsonl(objects: list[dict[str, object]]) -> str:
    return "".join(orjson.dumps(obj).decode() + "\n" for obj in objects)


def test_requests_file_in_input_order(
    capsys: pytest.CaptureFixture[str], policy: str, tmp_path: Path
) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(jsonl(LINES[:2]) + "\n" + jsonl(LINES[2:]))  # a blank line is skipped
    code, out, err = run(capsys, "--policy", policy, "--requests", str(requests))
    assert (code, out, err) == (0, EXPECTED, "")


def test_requests_from_stdin(
    capsys: pytest.CaptureFixture[str], policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(jsonl(LINES)))
    code, out, _ = run(capsys, "--policy", policy, "--requests", "-")
    assert (code, out) == (0, EXPECTED)


def test_table_format(
    capsys: pytest.CaptureFixture[str], policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LINE is the line in the input (a blank line is skipped), RULE is `rules[N]`, counted from 0
    # as kube-apiserver counts them.
    monkeypatch.setattr("sys.stdin", io.StringIO(jsonl(LINES[1:2]) + "\n" + jsonl(LINES[2:3])))
    assert main(["audit-level", "--policy", policy, "--requests", "-", "--format", "table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        [
            "LINE",
            "USER",
            "VERB",
            "TARGET",
            "LEVEL",
            "RULE",
            *["OMIT", "STAGES", "OMIT", "MANAGED", "FIELDS"],
        ],
        ["1", "(unauthenticated)", "get", "/healthz", "None", "rules[0]", "Panic", "no"],
        ["3", "bob", "get", "core/pods/log", "RequestResponse", "rules[2]", "Panic", "no"],
    ]
    column = lines[0].index("LEVEL")  # aligned: each row's level starts under the header
    assert lines[1][column:].startswith("None ")
    assert lines[2][column:].startswith("RequestResponse ")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"verb": 1}', "verb: must be a string"),
        ('{"verb": "get", "groups": "ops"}', "groups: must be a list of strings"),
        ('{"groups": ["ops", 1]}', "groups: must be a list of strings"),
        ('{"user": 7}', "user: must be a string or null"),
        ('{"resourceRequest": "yes"}', "resourceRequest: must be true or false"),
        ('{"verb": "get", "namespce": "x"}', "namespce: unknown key"),
        ('{"verb": "get"', "not JSON"),
        ('["get"]', "must be a JSON object"),
    ],
)
def test_bad_line_exits_2_naming_file_line_and_field(
    capsys: pytest.CaptureFixture[str], policy: str, tmp_path: Path, line: str, message: str
) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(jsonl(LINES[:2]) + line + "\n")
    code, out, err = run(capsys, "--policy", policy, "--requests", str(requests))
    assert (code, out) == (2, [])  # nothing is printed before every line is read
    assert err.startswith(f"kubefence audit-level: {requests}:3: {message}")
    assert err.count("\n") == 1


def test_null_user_is_unauthenticated(
    capsys: pytest.CaptureFixture[str], policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = '{"user": null, "groups": ["ops"], "verb": "get", "resource": "pods"}\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(line))
    _, out, _ = run(capsys, "--policy", policy, "--requests", "-")
    assert out == [result("Metadata", 4, ["Panic"])]  # userGroups never match no user


def test_bad_policy_exits_2_naming_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]\n")
    code, out, err = run(capsys, "--policy", str(path), "--verb", "get")
    assert (code, out) == (2, [])
    assert err.startswith(f"kubefence audit-level: {path}: rules[0].level: unsupported level")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "/nonexistent/p.yaml", "--verb", "get"], "/nonexistent/p.yaml: cannot read"),
        (["--requests", "/nonexistent/r.jsonl"], "/nonexistent/r.jsonl: cannot read"),
        (["--requests", "-", "--verb", "get", "--user", "u"], "combined with --user, --verb"),
    ],
)
def test_unreadable_inputs_exit_2(
    capsys: pytest.CaptureFixture[str], policy: str, argv: list[str], message: str
) -> None:
    if "--policy" not in argv:
        argv = ["--policy", policy, *argv]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, [])
    assert message in err


def test_policy_flag_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["audit-level", "--verb", "get"])
    assert info.value.code == 2
    assert "--policy" in capsys.readouterr().err


# --- what the API server would never send ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--verb", "PATCH", "--resource", "pods"], "--verb PATCH: the API server sends verbs in lower case: did you mean patch"),
        (["--verb", "pach", "--resource", "pods"], "--verb pach: not a verb of a resource request: did you mean patch"),
        (["--verb", "get", "--resource", "pod"], "--resource pod: resources are plural: did you mean pods"),
        (["--verb", "get", "--api-group", "networking.k8s.io", "--resource", "networkpolicy"], "--resource networkpolicy: resources are plural: did you mean networkpolicies"),
        (["--verb", "get", "--resource", "Ingress"], "--resource Ingress: resources are lower case: did you mean ingresses"),
        (["--verb", "GET", "--path", "/healthz"], "--verb GET: the API server sends verbs in lower case: did you mean get"),
    ],
)  # fmt: skip
def test_a_request_the_api_server_never_sends_is_refused_with_what_was_meant(
    capsys: pytest.CaptureFixture[str], policy: str, argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "--policy", policy, *argv)
    assert (code, out) == (2, [])
    assert err == f"kubefence audit-level: {message}\n"


def test_what_the_api_server_sends_passes(capsys: pytest.CaptureFixture[str], policy: str) -> None:
    """Lower-case verbs of either kind of request, any plural (a custom resource's too)."""
    for argv in (
        ["--verb", "deletecollection", "--resource", "pods"],
        ["--verb", "post", "--path", "/apis"],
        ["--verb", "get", "--api-group", "example.com", "--resource", "widgets"],
        ["--verb", "get", "--resource", "endpoints"],
    ):
        code, out, err = run(capsys, "--policy", policy, *argv)
        assert (code, err) == (0, ""), argv
        assert len(out) == 1


def test_a_bad_verb_in_a_requests_line_names_the_line_and_field(
    capsys: pytest.CaptureFixture[str], policy: str, tmp_path: Path
) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(jsonl([*LINES[:2], {"verb": "get", "resource": "deployment"}]))
    code, out, err = run(capsys, "--policy", policy, "--requests", str(requests))
    assert (code, out) == (2, [])
    assert err == (
        f"kubefence audit-level: {requests}:3: resource: 'deployment': resources are plural:"
        " did you mean deployments\n"
    )


def test_no_request_at_all_is_refused_with_the_usage(
    capsys: pytest.CaptureFixture[str], policy: str
) -> None:
    code, out, err = run(capsys, "--policy", policy)
    assert (code, out) == (2, [])
    usage, _, reason = err.rpartition("kubefence audit-level: ")
    assert usage.startswith("usage: kubefence audit-level")
    assert "--requests" in usage
    assert reason.startswith("no request: give its flags")


def test_o_is_the_short_form_of_format(capsys: pytest.CaptureFixture[str], policy: str) -> None:
    assert main(["audit-level", "--policy", policy, "-o", "table", "--verb", "get", "--resource", "pods"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("LINE ")


def test_requests_from_stdin_are_answered_as_they_arrive(policy: str) -> None:
    """A program asking over a pipe gets each answer before it sends the next question."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    with subprocess.Popen(
        [sys.executable, "-m", "webhook", "audit-level", "--policy", policy, "--requests", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        answers = []
        for line in (LINES[1], LINES[2]):
            process.stdin.write(orjson.dumps(line) + b"\n")
            process.stdin.flush()
            # Waits for the answer with stdin still open (the old code answered at EOF only);
            # the limit only keeps a failure from hanging the suite.
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, "no answer while stdin is open"
            answers.append(orjson.loads(process.stdout.readline()))
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    assert answers == EXPECTED[1:3]
