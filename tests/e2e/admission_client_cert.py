"""The API server's client certificate for admission webhooks, as the e2e control plane sets it up.

kube-apiserver shows a webhook a client certificate only when its AdmissionConfiguration gives the
ValidatingAdmissionWebhook plugin a kubeconfig (`kubeConfigFile`) with a user for that webhook.
The resolver tries the webhook's host:port, then `*.` suffixes, then `*` (k8s.io/apiserver
pkg/util/webhook/authentication.go); the tests' webhooks listen on ports chosen after the API
server starts, so the user here is `*`. The API server refuses a relative kubeConfigFile
(pkg/admission/plugin/webhook/config/kubeconfig.go): every path written is absolute.

Plain module, no pytest.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def issue_client_certificate(
    ca_cert_path: Path,
    ca_key_path: Path,
    common_name: str,
    directory: Path,
    *,
    organizations: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """A TLS client certificate and its key, signed by the CA in the files, written to
    ``directory`` (as ``<common name>.crt`` and ``.key``); valid from an hour ago for two days."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca_key_path}: expected an EC key")
    subject = x509.Name(
        [
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    stem = common_name.replace(":", "_").replace("/", "_")
    cert_path = (directory / f"{stem}.crt").resolve()
    key_path = cert_path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return cert_path, key_path


def write_admission_configuration(path: Path, kubeconfig_path: Path, cert: Path, key: Path) -> None:
    """An AdmissionConfiguration at ``path`` whose webhook kubeconfig (at ``kubeconfig_path``)
    makes the API server show every validating webhook the client certificate ``cert``."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [
            {
                "name": "*",
                "user": {
                    "client-certificate": str(cert.resolve()),
                    "client-key": str(key.resolve()),
                },
            }
        ],
    }
    _write_private(kubeconfig_path, yaml.safe_dump(kubeconfig).encode())
    admission = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": "ValidatingAdmissionWebhook",
                "configuration": {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "WebhookAdmissionConfiguration",
                    "kubeConfigFile": str(kubeconfig_path.resolve()),
                },
            }
        ],
    }
    path.write_text(yaml.safe_dump(admission))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
