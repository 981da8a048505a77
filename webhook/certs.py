"""Certificates for the webhook: a CA, the serving certificates it signs, the PEM files on disk.

Only `write_bundle` writes, and it replaces each file atomically so a reader never sees half a file.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import Certificate
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.errors import InputError

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KeyType = Literal["ecdsa", "rsa"]
StrPath: TypeAlias = str | os.PathLike[str]

CLOCK_SKEW = dt.timedelta(minutes=5)
RENEW_BEFORE = dt.timedelta(days=7)
_DNS_NAME = re.compile(
    r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Paths:
    """The files of a bundle; `ca_key` is None when the directory holds no CA key of ours."""

    ca_cert: Path
    ca_key: Path | None
    cert: Path
    key: Path


def bundle_paths(out_dir: StrPath) -> Paths:
    out = Path(out_dir)
    return Paths(out / "ca.crt", out / "ca.key", out / "tls.crt", out / "tls.key")


def _new_key(key_type: KeyType, rsa_bits: int) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    """Signing for all; certificate and CRL signing for a CA; key encipherment for RSA TLS keys."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def generate_ca(
    common_name: str = "kubefence-ca", days: int = 3650, key_type: KeyType = "ecdsa"
) -> tuple[Certificate, PrivateKey]:
    """A self-signed CA that may sign serving certificates only (path length 0)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    key = _new_key(key_type, rsa_bits=3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True, rsa_key=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _authority_key_id(ca_cert: Certificate) -> x509.AuthorityKeyIdentifier:
    """The CA's own key identifier when it states one, else one computed from its key."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        pass
    public_key = ca_cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("CA key must be ECDSA or RSA")
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)


def issue_serving_cert(
    ca_cert: Certificate,
    ca_key: PrivateKey,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    *,
    days: int = 365,
    key_type: KeyType = "ecdsa",
) -> tuple[Certificate, PrivateKey]:
    """A TLS server certificate for exactly the given names, valid no longer than its CA."""
    if days < 1:
        raise ValueError("days must be at least 1")
    dns = list(dict.fromkeys(dns_names))
    ips = list(dict.fromkeys(ipaddress.ip_address(ip) for ip in ip_addresses))
    if not dns and not ips:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    key = _new_key(key_type, rsa_bits=2048)
    common_name = dns[0] if dns else str(ips[0])
    # CN is limited to 64 characters; clients go by the SANs, which must then be critical.
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        if len(common_name) <= 64
        else x509.Name([])
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ip) for ip in ips]
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=not subject)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False, rsa_key=key_type == "rsa"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names a Service is reached by inside the cluster, shortest first."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def split_sans(values: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split hosts into `(dns_names, ip_addresses)`; a value that is neither is an InputError."""
    dns: list[str] = []
    ips: list[str] = []
    for value in values:
        try:
            ips.append(str(ipaddress.ip_address(value)))
        except ValueError:
            if len(value) > 253 or not _DNS_NAME.fullmatch(value):
                raise InputError(f"{value!r}: neither a DNS name nor an IP address") from None
            dns.append(value.lower())
    return dns, ips


def ca_bundle_b64(ca_cert: Certificate) -> str:
    """The CA in the form a ValidatingWebhookConfiguration's `caBundle` takes."""
    return base64.b64encode(ca_cert.public_bytes(serialization.Encoding.PEM)).decode("ascii")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_bundle(
    out_dir: StrPath,
    ca_cert: Certificate,
    ca_key: PrivateKey | None,
    cert: Certificate,
    key: PrivateKey,
) -> Paths:
    """Write ca.crt, ca.key (when given), tls.key, then tls.crt; keys 0600, certificates 0644.

    A folder that cannot be made is an InputError naming it; other write failures are OSError.
    """
    paths = bundle_paths(out_dir)
    try:
        paths.cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{out_dir}: cannot write: a file is in the way of the folder") from None
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write: {exc.strerror or exc}") from None
    files = [(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)]
    if ca_key is not None:
        files.append((Path(out_dir, "ca.key"), _key_pem(ca_key), 0o600))
    # The certificate goes last: a watcher that reloads when it changes finds its key in place.
    files.append((paths.key, _key_pem(key), 0o600))
    files.append((paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644))
    for path, data, mode in files:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return paths if ca_key is not None else replace(paths, ca_key=None)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what} file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def load_certificates(path: StrPath) -> list[Certificate]:
    """Every certificate of a PEM file, leaf first; InputError naming the file if there is none."""
    file = Path(path)
    try:
        return x509.load_pem_x509_certificates(_read(file, "certificate"))
    except ValueError:
        raise InputError(f"{file}: not a PEM certificate") from None


def _load_cert(path: Path) -> Certificate:
    return load_certificates(path)[0]


def load_private_key(path: StrPath) -> PrivateKeyTypes:
    """An unencrypted PEM private key of any type; InputError naming the file if it will not do."""
    file = Path(path)
    try:
        return serialization.load_pem_private_key(_read(file, "key"), password=None)
    except TypeError:
        raise InputError(f"{file}: encrypted keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{file}: not a PEM private key") from None


def _load_key(path: Path) -> PrivateKey:
    key = load_private_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InputError(f"{path}: key must be ECDSA or RSA, not {type(key).__name__}")
    return key


def key_matches(key: PrivateKeyTypes, cert: Certificate) -> bool:
    """True when the certificate carries the public half of the key."""
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def load_ca(cert_path: StrPath, key_path: StrPath) -> tuple[Certificate, PrivateKey]:
    """Read a CA certificate and its key; InputError naming the file if either will not do."""
    cert_file, key_file = Path(cert_path), Path(key_path)
    cert = _load_cert(cert_file)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        can_sign = cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        can_sign = True
    if not (is_ca and can_sign):
        raise InputError(f"{cert_file}: not a CA certificate (cannot sign certificates)")
    if cert.not_valid_after_utc <= _now():
        raise InputError(f"{cert_file}: CA certificate expired on {cert.not_valid_after_utc:%F}")
    key = _load_key(key_file)
    if not key_matches(key, cert):
        raise InputError(f"{key_file}: key does not match the certificate in {cert_file}")
    return cert, key


def _serving_cert_fits(
    paths: Paths, ca_cert: Certificate, dns: Sequence[str], ips: Sequence[str]
) -> bool:
    """True when tls.crt and tls.key are a pair the CA signed, naming every host, not expiring."""
    try:
        cert = _load_cert(paths.cert)
        key = _load_key(paths.key)
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (InputError, InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return (
        key_matches(key, cert)
        and cert.not_valid_after_utc - _now() > RENEW_BEFORE
        and set(dns) <= have_dns
        and set(ips) <= have_ips
    )


def ensure_dev_certs(out_dir: StrPath, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> Paths:
    """Certificates for local runs in out_dir: keep a valid CA and serving cert, renew what is not.

    The serving certificate names every host, and also ::1 when localhost is among them.
    """
    paths = bundle_paths(out_dir)
    dns, ips = split_sans([*hosts, *(["::1"] if "localhost" in hosts else [])])
    try:
        ca_cert, ca_key = load_ca(paths.ca_cert, Path(out_dir, "ca.key"))
        new_ca = ca_cert.not_valid_after_utc - _now() <= RENEW_BEFORE
    except InputError:
        new_ca = True
    if new_ca:
        ca_cert, ca_key = generate_ca()
    elif _serving_cert_fits(paths, ca_cert, dns, ips):
        return paths
    cert, key = issue_serving_cert(ca_cert, ca_key, dns, ips)
    write_bundle(out_dir, ca_cert, ca_key if new_ca else None, cert, key)
    return paths
