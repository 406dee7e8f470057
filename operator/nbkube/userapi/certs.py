"""The user-facing port's serving certificate: a CA of the operator's own and a certificate for the
API Service's DNS names, kept on the results volume so restarts keep the same CA (the APIService's
caBundle). Blocking (file I/O, key generation): call in a thread."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class ServingCertificate:
    cert_file: Path
    key_file: Path
    ca_pem: bytes  # what the APIService's caBundle must hold


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _usable(cert_file: Path, ca_file: Path, dns_names: tuple[str, ...]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        x509.load_pem_x509_certificate(ca_file.read_bytes())
    except (OSError, ValueError):
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return set(sans.get_values_for_type(x509.DNSName)) == set(dns_names) and left > datetime.timedelta(
        days=RENEW_BEFORE_DAYS
    )


def ensure_serving_certificate(directory: Path, dns_names: tuple[str, ...]) -> ServingCertificate:
    """The certificate in `directory`, made (or renewed: wrong names, or under 30 days left) if needed."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_file, cert_file, key_file = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    if not (_usable(cert_file, ca_file, dns_names) and key_file.exists()):
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nbkube-user-api-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS * 10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            # The names are in the SANs; a common name is at most 64 characters, and a Service's DNS
            # name in a long namespace is longer.
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nbkube-user-api")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(key_file, _key_pem(key), 0o600)
        _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(ca_file, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    return ServingCertificate(cert_file, key_file, ca_file.read_bytes())


def service_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server checks the serving certificate against (`<service>.<namespace>.svc`)."""
    return (
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
    )
