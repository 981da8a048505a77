"""The kubeconfig check refuses only what the client could not connect with.

Its refusals, one line naming the file and field, are in test_broken_input.py; here, kubeconfigs
the client loads pass it, and the client loads each of them (the check is no stricter than it).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from kubernetes import config

from webhook.cluster.kubeconfig import CredentialsError, default_files, load

PEM = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


def _kubeconfig(cluster: str, user: str = "{token: abc}", context_user: str = "u") -> str:
    return f"""apiVersion: v1
kind: Config
current-context: c
contexts:
- name: c
  context: {{cluster: k, user: {context_user}}}
clusters:
- name: k
  cluster: {cluster}
users:
- name: u
  user: {user}
"""


ACCEPTED = {
    "ca-file-beside-it": _kubeconfig('{server: "https://127.0.0.1:6443", certificate-authority: ca.crt}'),
    "ca-data": _kubeconfig(f'{{server: "https://127.0.0.1:6443", certificate-authority-data: "{PEM}"}}'),
    "data-wins-over-a-missing-file": _kubeconfig(
        f'{{server: "https://h:6443", certificate-authority: gone.crt, certificate-authority-data: "{PEM}"}}'
    ),
    "http-reads-no-ca": _kubeconfig('{server: "http://127.0.0.1:8080", certificate-authority: gone.crt}'),
    "user-not-listed": _kubeconfig('{server: "https://127.0.0.1:6443"}', context_user="nobody"),
    "token-file-beside-it": _kubeconfig('{server: "https://127.0.0.1:6443"}', user="{tokenFile: token}"),
    "no-user-at-all": _kubeconfig('{server: "https://127.0.0.1:6443"}', user="{}", context_user='""'),
}  # fmt: skip


@pytest.mark.parametrize("name", ACCEPTED)
def test_what_the_check_accepts_the_client_loads(tmp_path: Path, name: str) -> None:
    (tmp_path / "ca.crt").write_bytes(base64.b64decode(PEM))
    (tmp_path / "token").write_text("abc\n")
    path = tmp_path / "kubeconfig"
    path.write_text(ACCEPTED[name])
    load([path], explicit=True)
    with config.new_client_from_config(config_file=str(path)) as api:
        assert api.configuration.host.startswith("http")


def test_a_relative_file_is_read_beside_the_kubeconfig_not_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "kubeconfig"
    path.write_text(_kubeconfig('{server: "https://h:6443", certificate-authority: ca.crt}'))
    (tmp_path / "ca.crt").write_text("in the working folder, not beside the kubeconfig")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CredentialsError, match=r"clusters\[0\]\.cluster\.certificate-authority: "):
        load([path], explicit=True)


def test_the_default_is_every_file_kubeconfig_lists_then_home() -> None:
    assert default_files({"KUBECONFIG": "/a/config"}) == (Path("/a/config"),)
    # As client-go's `filepath.SplitList` and `deduplicate`: empty names dropped, repeats once.
    listed = f"/a/config{os.pathsep}{os.pathsep}/b/config{os.pathsep}/a/config"
    assert default_files({"KUBECONFIG": listed}) == (Path("/a/config"), Path("/b/config"))
    assert default_files({"KUBECONFIG": ""}) == (Path("~/.kube/config").expanduser(),)
    assert default_files({}) == (Path("~/.kube/config").expanduser(),)


def test_an_exec_plugin_given_as_a_path_is_read_beside_its_kubeconfig(tmp_path: Path) -> None:
    """As client-go resolves it: `./bin/credential` beside the file, `aws` left to $PATH."""
    path = tmp_path / "kubeconfig"
    for command, resolved in (("./bin/credential", str(tmp_path / "bin" / "credential")), ("aws", "aws")):  # fmt: skip
        user = f"{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: {command}}}}}"
        path.write_text(_kubeconfig('{server: "https://127.0.0.1:6443"}', user=user))
        (entry,) = load([path]).document["users"]
        assert os.path.normpath(entry["user"]["exec"]["command"]) == os.path.normpath(resolved)


def test_an_empty_file_in_kubeconfig_is_an_empty_config_as_client_go_loads_it(
    tmp_path: Path,
) -> None:
    empty, good = tmp_path / "empty", tmp_path / "good"
    empty.write_text("")
    good.write_text(_kubeconfig('{server: "https://127.0.0.1:6443"}'))
    assert load([empty, good]).document["current-context"] == "c"
    with pytest.raises(CredentialsError, match="the file is empty"):
        load([empty], explicit=True)  # --kubeconfig FILE names it: an empty one is a mistake


def test_a_malformed_exec_of_an_unused_user_is_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    text = _kubeconfig('{server: "https://127.0.0.1:6443"}') + "- name: v\n  user: {exec: oops}\n"
    path.write_text(text)
    assert load([path]).document["current-context"] == "c"
