"""The cluster tier of the end-to-end tests: the local control plane (tests/e2e/controlplane.py)
plus kube-controller-manager, kube-scheduler and kwok simulating the kubelets of N fake Nodes, all
host processes built by hack/build-control-plane.sh.

What runs:
- kube-apiserver with the ServiceAccount admission plugin back on (the controller manager makes
  each namespace's ``default`` ServiceAccount), a client certificate for the kubelets and the
  cluster CA to check theirs;
- kube-controller-manager: every controller (``--controllers=*``), each under its own
  ServiceAccount (``--use-service-account-credentials``), signing tokens with the API server's
  service-account key, no leader election; so Deployments get ReplicaSets and Pods, namespaces
  are finalised, garbage is collected and the aggregated roles (``edit``, ``view``) are filled;
- kube-scheduler, binding Pods to the fake Nodes;
- kwok, managing the Nodes annotated ``kwok.x-k8s.io/node=fake`` (heartbeats with Leases, Pods
  Running and Ready, deletions finished) with kwok's own Stage files (copied from its module at
  build time into the cache folder) and ours (tests/cluster/stages/), and serving the kubelet API
  on one host address, so that the API server's ``nodes/proxy`` tunnels (exec, attach, logs,
  port-forward) reach it.

Adding a scenario: a ``tests/e2e/test_cluster_*.py`` file (its tests get the ``cluster`` marker)
whose tests take the session fixture ``fenced_cluster`` (FencedCluster: kubefence enforcing,
registered) or ``cluster`` (Cluster alone; the webhook registered only while some test holds
``fenced_cluster``, so a test that needs it absent calls ``fenced_cluster.unregister()`` and
``register()`` after). Drive it with the real kubectl: ``cluster.kubectl(...)`` (a
CompletedProcess, never raises), ``kubectl_ok(...)`` (must succeed; its stdout),
``kubectl_json(...)``; wait for the controllers with ``wait_for(read, what)``. The tier is shared
by the session: use namespaces of your own, leave Nodes uncordoned and kubefence registered.

Plain module, no pytest: ``with Cluster() as c: ...`` works from a script too, and
``python tests/e2e/cluster.py`` starts one and prints its KUBECONFIG.
"""

from __future__ import annotations

import atexit
import base64
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from controlplane import ControlPlane, ControlPlaneError, _Proc, bin_dir, free_port
from cryptography.hazmat.primitives import serialization
from kubefence_process import AUDIT_POLICY, MARKER_NAMESPACE, RunningWebhook

from webhook import certs

# The namespace fence the scenarios apply: a default-deny of every Pod, both directions.
DEFAULT_DENY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"""

REPO = Path(__file__).resolve().parents[2]
OWN_STAGES = REPO / "tests" / "cluster" / "stages"
# The binaries the cluster tier runs (kubectl drives it, helm renders the chart's registration).
CLUSTER_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
)
KWOK_STAGES = "kwok-stages"  # bin/kwok-stages: kwok's own Stage files, from its module source
NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_ANNOTATION_VALUE = "fake"
NODE_PREFIX = "kwok-node-"
# Apart from the API server's --service-cluster-ip-range (10.0.0.0/24).
POD_CIDR = "10.244.0.0/16"
# The only command found by name in a `kubectl exec` that reaches kwok (see _write_kwok_config).
EXEC_COMMAND = "echo"
# What `kubectl logs` and `kubectl attach` show for every container.
LOG_LINE = "kwok: log line of a simulated container"
LOG_TIME = "2026-01-01T00:00:00.000000000Z"
NOBODY = 65534


def missing_cluster_binaries(directory: Path | None = None) -> list[Path]:
    """What the cluster tier needs that ``directory`` (default: the cache's bin/) lacks: its
    binaries and kwok's Stage files."""
    d = directory or bin_dir()
    missing = [d / b for b in CLUSTER_BINARIES if not os.access(d / b, os.X_OK)]
    if not (d / KWOK_STAGES).is_dir() or not any((d / KWOK_STAGES).glob("*.yaml")):
        missing.append(d / KWOK_STAGES)
    return missing


def proxyable(address: str) -> bool:
    """Whether the API server proxies ``nodes/proxy`` to this address: not loopback, link-local,
    multicast or unspecified (k8s.io/apimachinery's IsProxyableIP)."""
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def host_address(ip_output: str) -> str | None:
    """The first proxyable IPv4 address in the output of ``ip -4 -o addr``, else None."""
    for line in ip_output.splitlines():
        fields = line.split()
        if "inet" in fields:
            address = fields[fields.index("inet") + 1].split("/")[0]
            if proxyable(address):
                return address
    return None


def find_host_address() -> str | None:
    """A non-loopback address of this machine that kwok can serve the kubelet API on."""
    ip = shutil.which("ip")
    if ip is None:
        return None
    out = subprocess.run([ip, "-4", "-o", "addr"], capture_output=True, text=True, check=False)
    return host_address(out.stdout)


def node_manifest(name: str) -> dict[str, Any]:
    """A fake Node for kwok: annotated for kwok's selector, untainted, schedulable."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: NODE_ANNOTATION_VALUE},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {},
    }


class Cluster:
    """ControlPlane + kube-controller-manager + kube-scheduler + kwok, with ``nodes`` fake Nodes.

    ``kubeconfig_path`` is the admin's (``system:masters``), as for ControlPlane; ``node_names``
    the Nodes; ``node_ip`` the host address kwok serves the kubelet API on (None when the machine
    has none: the Nodes and Pods work, the tunnels do not); ``port_forward_port`` the host port
    on 127.0.0.1 every ``kubectl port-forward`` reaches (nothing listens there unless a test
    does); ``logs_file`` what ``kubectl logs`` and ``attach`` show for every container (LOG_LINE);
    ``kubectl exec POD -- echo ...`` runs EXEC_COMMAND on the host, as nobody.
    """

    local = True

    def __init__(
        self,
        *,
        nodes: int = 3,
        node_ip: str | None = None,
        serve_kubelet: bool = True,
        start_timeout: float = 120.0,
        extra_apiserver_args: list[str] | None = None,
    ) -> None:
        # node_ip None: the first proxyable host address; serve_kubelet False: none (as on a host
        # without one).
        self.node_ip = (node_ip or find_host_address()) if serve_kubelet else None
        self.node_names = [f"{NODE_PREFIX}{i}" for i in range(nodes)]
        self.node_port = free_port()
        self.port_forward_port = free_port()
        self.start_timeout = start_timeout
        self.bin_dir = bin_dir()
        self.control_plane = ControlPlane(start_timeout=start_timeout, extra_apiserver_args=[])
        self.work_dir = self.control_plane.work_dir
        self.log_dir = self.control_plane.log_dir
        self.pki_dir = self.control_plane.pki_dir
        self.kubeconfig_path = self.control_plane.kubeconfig_path
        self.audit_log_path = self.control_plane.audit_log_path
        self.ca_path = self.control_plane.ca_path
        self.logs_file = self.work_dir / "kwok" / "container.log"
        self.exec_dir = Path(tempfile.mkdtemp(prefix="kubefence-kwok-exec-"))
        self.exec_dir.chmod(0o755)
        self._extra_apiserver_args = list(extra_apiserver_args or [])
        self.start_seconds: float | None = None
        self._procs: dict[str, _Proc] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every process, create the Nodes; return once they are Ready, the default
        ServiceAccount exists and ``edit`` is aggregated."""
        missing = missing_cluster_binaries(self.bin_dir)
        if missing:
            raise ControlPlaneError(
                f"missing {', '.join(map(str, missing))}: run hack/build-control-plane.sh"
            )
        t0 = time.monotonic()
        cp = self.control_plane
        cp.prepare()
        kubelet_client_cert, kubelet_client_key = cp.issue_client_certificate(
            "kube-apiserver-kubelet-client",
            self.pki_dir / "kubelet-client",
            organizations=("system:masters",),
        )
        cp.extra_apiserver_args = [
            # Back on (ControlPlane turns it off): Pods get their namespace's default
            # ServiceAccount, which the controller manager now creates.
            "--disable-admission-plugins=",
            f"--kubelet-client-certificate={kubelet_client_cert}",
            f"--kubelet-client-key={kubelet_client_key}",
            f"--kubelet-certificate-authority={self.ca_path}",
            "--kubelet-preferred-address-types=InternalIP",
            *self._extra_apiserver_args,
        ]
        atexit.register(self.stop)
        try:
            cp.start()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            self._create_nodes()
            self._wait_until(self._nodes_ready, "every fake Node Ready")
            self._wait_until(self._default_service_account, "ServiceAccount default/default")
            self._wait_until(self._edit_aggregated, "ClusterRole edit aggregated")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop kwok, the scheduler and the controller manager, then the control plane. Logs
        stay in ``log_dir``."""
        for name in ("kwok", "kube-scheduler", "kube-controller-manager"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        self.control_plane.stop()

    def cleanup(self) -> None:
        """Stop, and remove the working directory (logs included)."""
        self.stop()
        self.control_plane.cleanup()
        shutil.rmtree(self.exec_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.control_plane.running and all(p.alive() for p in self._procs.values())

    @property
    def tunnels(self) -> bool:
        """Whether kwok serves the kubelet API (exec, attach, logs, port-forward, nodes/proxy):
        only on a host address the API server proxies to. A tunnel test skips without it."""
        return self.node_ip is not None

    def audit_events(self) -> list[dict[str, Any]]:
        return self.control_plane.audit_events()

    def issue_client_certificate(
        self, common_name: str, directory: Path, *, organizations: tuple[str, ...] = ()
    ) -> tuple[Path, Path]:
        return self.control_plane.issue_client_certificate(
            common_name, directory, organizations=organizations
        )

    # -- processes ---------------------------------------------------------------------------

    def _component_kubeconfig(self, user: str) -> Path:
        """A kubeconfig with a client certificate for ``user`` (its ClusterRole is bootstrapped
        by the API server under that name: system:kube-controller-manager, ...)."""
        directory = self.pki_dir / user.replace(":", "-")
        cert, key = self.issue_client_certificate(user, directory)
        path = self.work_dir / f"{user.replace(':', '-')}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.control_plane.server_url,
                        "certificate-authority": str(self.ca_path),
                    },
                }
            ],
            "users": [
                {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> _Proc:
        proc = _Proc(name, args, self.log_dir / f"{name}.log", self.work_dir, env=env)
        self._procs[name] = proc
        return proc

    def _start_controller_manager(self) -> None:
        kubeconfig = self._component_kubeconfig("system:kube-controller-manager")
        pki = self.pki_dir
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--controllers=*",
                "--use-service-account-credentials",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_path}",
                f"--cluster-signing-cert-file={self.ca_path}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self._component_kubeconfig("system:kube-scheduler")
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    def _start_kwok(self) -> None:
        kwok_dir = self.work_dir / "kwok"
        kwok_dir.mkdir(exist_ok=True)
        config = self._write_kwok_config(kwok_dir)
        stages = sorted((self.bin_dir / KWOK_STAGES).glob("*.yaml"))
        stages += sorted(OWN_STAGES.glob("*.yaml"))
        args = [
            str(self.bin_dir / "kwok"),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}={NODE_ANNOTATION_VALUE}",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
            *(f"--config={path}" for path in [*stages, config]),
        ]
        if self.node_ip is not None:
            cert, key = self._kwok_serving_certificate(kwok_dir, self.node_ip)
            args += [
                f"--node-ip={self.node_ip}",
                f"--node-port={self.node_port}",
                # One address, not every interface: kwok's kubelet API has no authentication.
                f"--server-address={self.node_ip}:{self.node_port}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
            ]
        # kwok's exec runs the command ON THIS HOST. Its PATH holds one harmless command
        # (EXEC_COMMAND): a bare name finds nothing else; see _write_kwok_config for the rest.
        env = {"PATH": str(self.exec_dir / "path"), "HOME": str(kwok_dir)}
        self._spawn("kwok", args, env=env)

    def _write_kwok_config(self, kwok_dir: Path) -> Path:
        """kwok's ClusterExec, ClusterLogs, ClusterAttach and ClusterPortForward, for every Pod.

        ClusterExec cannot list allowed commands: kwok runs whatever the request names, on the
        host. So the command runs as nobody (uid and gid 65534) in an empty folder, and kwok's
        PATH finds only EXEC_COMMAND; an absolute path still runs, as nobody, which is why kwok
        listens on one address only and only while a test runs.
        """
        # Outside work_dir (mkdtemp's 0700, which nobody cannot enter, so nothing would start).
        exec_path = self.exec_dir / "path"
        exec_path.mkdir(exist_ok=True)
        exec_path.chmod(0o755)
        target = shutil.which(EXEC_COMMAND, path="/usr/bin:/bin")
        if target is None:
            raise ControlPlaneError(f"no {EXEC_COMMAND} in /usr/bin or /bin")
        link = exec_path / EXEC_COMMAND
        if not link.exists():
            link.symlink_to(target)
        workdir = self.exec_dir / "workdir"
        workdir.mkdir(exist_ok=True)
        workdir.chmod(0o755)
        # CRI log format, which kwok's logs and attach parse: time, stream, tag (F: full line).
        self.logs_file.write_text(f"{LOG_TIME} stdout F {LOG_LINE}\n")
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterExec",
                "metadata": {"name": "kubefence-e2e-exec"},
                "spec": {
                    "execs": [
                        {
                            "local": {
                                "workDir": str(workdir),
                                "securityContext": {"runAsUser": NOBODY, "runAsGroup": NOBODY},
                            }
                        }
                    ]
                },
            },
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterLogs",
                "metadata": {"name": "kubefence-e2e-logs"},
                "spec": {"logs": [{"logsFile": str(self.logs_file), "follow": False}]},
            },
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterAttach",
                "metadata": {"name": "kubefence-e2e-attach"},
                "spec": {"attaches": [{"logsFile": str(self.logs_file)}]},
            },
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterPortForward",
                "metadata": {"name": "kubefence-e2e-port-forward"},
                "spec": {
                    "forwards": [
                        {"target": {"address": "127.0.0.1", "port": self.port_forward_port}}
                    ]
                },
            },
        ]
        path = kwok_dir / "kwok.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        return path

    def _kwok_serving_certificate(self, kwok_dir: Path, ip: str) -> tuple[Path, Path]:
        """kwok's kubelet serving certificate for ``ip``, signed by the cluster CA (which the API
        server checks it against: --kubelet-certificate-authority)."""
        ca_cert, ca_key = certs.load_ca(self.ca_path, self.pki_dir / "ca.key")
        cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], [ip], days=2)
        cert_path, key_path = kwok_dir / "kubelet.crt", kwok_dir / "kubelet.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return cert_path, key_path

    # -- objects -----------------------------------------------------------------------------

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120.0, as_user: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """The real kubectl as the admin (or impersonating ``as_user``); never raises on exit."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig_path)]
        if as_user:
            cmd.append(f"--as={as_user}")
        return subprocess.run(
            [*cmd, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )

    def kubectl_ok(self, *args: str, stdin: str | None = None, as_user: str = "") -> str:
        """kubectl that must succeed (an AssertionError naming its stderr if not); its stdout."""
        out = self.kubectl(*args, stdin=stdin, as_user=as_user)
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr or out.stdout}"
        return out.stdout

    def kubectl_json(self, *args: str) -> Any:
        out = self.kubectl(*args, "-o", "json")
        if out.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def _create_nodes(self) -> None:
        manifests = {"apiVersion": "v1", "kind": "List"}
        manifests["items"] = [node_manifest(n) for n in self.node_names]  # type: ignore[assignment]
        out = self.kubectl("apply", "-f", "-", stdin=json.dumps(manifests))
        if out.returncode != 0:
            raise ControlPlaneError(f"creating the fake Nodes: {out.stderr.strip()}")

    def _nodes_ready(self) -> bool:
        out = self.kubectl("get", "nodes", "-o", "json")
        if out.returncode != 0:
            return False
        ready = {
            n["metadata"]["name"]
            for n in json.loads(out.stdout)["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        }
        return set(self.node_names) <= ready

    def _default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0

    def _edit_aggregated(self) -> bool:
        out = self.kubectl("get", "clusterrole", "edit", "-o", "json")
        return out.returncode == 0 and bool(json.loads(out.stdout).get("rules"))

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            dead = [p for p in self._procs.values() if not p.alive()]
            if dead:
                p = dead[0]
                raise ControlPlaneError(
                    f"{p.name} exited with {p.popen.returncode} before {what};"
                    f" log {p.log_path}:\n{p.tail()}"
                )
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}:\n{p.tail(15)}" for p in self._procs.values())
                raise ControlPlaneError(f"not {what} after {self.start_timeout:.0f}s\n{tails}")
            time.sleep(0.2)


def wait_for(read: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """``read()`` until it returns something truthy, which is returned; an AssertionError naming
    ``what`` after ``timeout`` seconds (a poll for a controller's work, not a timing claim)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f}s")
        time.sleep(0.5)


def chart_webhook_configuration(
    url: str, ca_pem: bytes, values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The chart's ValidatingWebhookConfiguration (``helm template`` with its defaults, or with
    ``values`` over them, e.g. ``{"webhook": {"failurePolicy": "Ignore"}}``), each webhook's
    service reference rewritten to ``url`` with ``ca_pem`` as its caBundle: what the chart
    installs, pointed at a kubefence on the host."""
    sys.path.insert(0, str(REPO / "tests" / "chart"))
    from helmchart import render

    (vwc,) = [d for d in render(values) if d["kind"] == "ValidatingWebhookConfiguration"]
    for hook in vwc["webhooks"]:
        hook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
    return dict(vwc)


class FencedCluster:
    """A Cluster with kubefence (``hook``: a host process, RunningWebhook of
    tests/e2e/kubefence_process.py) registered by the chart's ValidatingWebhookConfiguration
    (``configuration``, named ``configuration_name``), failurePolicy Fail as the chart ships."""

    def __init__(
        self, cluster: Cluster, hook: RunningWebhook, work: Path, config_extra: str = ""
    ) -> None:
        self.cluster = cluster
        self.hook = hook
        self.configuration = chart_webhook_configuration(f"{hook.url}/validate", hook.ca_pem)
        self.configuration_name: str = self.configuration["metadata"]["name"]
        self._work = work
        self._config_extra = config_extra
        self._restarts = 0

    @classmethod
    def start(cls, cluster: Cluster, work: Path, config_extra: str = "") -> FencedCluster:
        """kubefence serving ``cluster`` (``config_extra``: YAML appended to its config file),
        registered; ``work`` holds its files."""
        hook = RunningWebhook.start(work, cluster.kubeconfig_path, AUDIT_POLICY, config_extra)
        fenced = cls(cluster, hook, work, config_extra)
        try:
            fenced.register()
        except BaseException:
            hook.stop()
            raise
        return fenced

    def restart(self) -> None:
        """Stop kubefence if it runs, start a new one (its own port and CA, same config) and
        point the registration at it: "kubefence is back" after an outage."""
        self.hook.stop()
        self._restarts += 1
        work = self._work / f"restart-{self._restarts}"
        work.mkdir()
        self.hook = RunningWebhook.start(
            work, self.cluster.kubeconfig_path, AUDIT_POLICY, self._config_extra
        )
        self.configuration = chart_webhook_configuration(
            f"{self.hook.url}/validate", self.hook.ca_pem
        )
        self.register()

    def reconfigure(self, values: Mapping[str, Any] | None = None) -> None:
        """Register the chart's rendering with ``values`` (None: its defaults) for the running
        kubefence: ``reconfigure({"webhook": {"failurePolicy": "Ignore"}})``, and
        ``reconfigure()`` to restore (``restart()`` restores the defaults too)."""
        self.configuration = chart_webhook_configuration(
            f"{self.hook.url}/validate", self.hook.ca_pem, values
        )
        self.register()

    def register(self) -> None:
        """Apply the configuration; return once the API server calls kubefence."""
        out = self.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(self.configuration))
        if out.returncode != 0:
            raise ControlPlaneError(f"registering kubefence: {out.stderr.strip()}")
        # Whatever kubefence's modes: the API server calls it once a dry-run Pod in the marker
        # namespace reaches its decision log.
        self.cluster.kubectl("create", "namespace", MARKER_NAMESPACE)
        wait_for(self._marker_decided, "decision on a dry-run Pod: the API server calls kubefence")

    def _marker_decided(self) -> bool:
        self.cluster.kubectl(
            "run", "marker", "-n", MARKER_NAMESPACE, "--image=registry.example/pause:1",
            "--dry-run=server",
        )  # fmt: skip
        return any(d.get("namespace") == MARKER_NAMESPACE for d in self.hook.decisions())

    def unregister(self) -> None:
        self.cluster.kubectl(
            "delete", "validatingwebhookconfiguration", self.configuration_name,
            "--ignore-not-found",
        )  # fmt: skip

    def stop(self) -> None:
        """Unregister first (else every later request in the tier waits on a dead webhook)."""
        try:
            self.unregister()
        finally:
            self.hook.stop()


if __name__ == "__main__":
    # python tests/e2e/cluster.py: start one, print how to reach it, run until Ctrl-C.
    import signal

    c = Cluster()
    c.start()
    print(f"ready in {c.start_seconds:.2f}s: export KUBECONFIG={c.kubeconfig_path}")
    print(f"nodes {', '.join(c.node_names)} on {c.node_ip}:{c.node_port}; logs in {c.log_dir}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
