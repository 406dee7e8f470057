"""Certificates and keys of a local cluster: one CA, the API server's serving certificate, an admin
client certificate (O=system:masters), the service-account signing key, and the aggregation layer's
front proxy: a CA of its own (as kubeadm makes it, separate from the cluster CA) and the client
certificate the API server presents to aggregated API servers (CN=front-proxy-client)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def front_proxy_ca_crt(self) -> Path:
        return self.dir / "front-proxy-ca.crt"

    @property
    def front_proxy_client_crt(self) -> Path:
        return self.dir / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.dir / "front-proxy-client.key"

    def client_certificate(self, cn: str, orgs: tuple[str, ...], directory: Path) -> tuple[Path, Path]:
        """A client certificate of the cluster CA for user `cn` in groups `orgs` (a client-certificate
        user, as an admin would issue one): returns (certificate, key) written under `directory`."""
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_name = x509.load_pem_x509_certificate(self.ca_crt.read_bytes()).subject
        key = _key()
        directory.mkdir(parents=True, exist_ok=True)
        crt_path, key_path = directory / f"{cn}.crt", directory / f"{cn}.key"
        _write_key(key_path, key)
        _write_cert(crt_path, _issue(key, _name(cn, orgs), ca_key, ca_name, client=True))
        return crt_path, key_path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create(directory: Path, service_ip: str) -> Pki:
    """Writes a fresh CA, serving certificate, admin client certificate and service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca_key = _key()
    ca_name = _name("nbkube-local-ca")
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_crt, _issue(ca_key, ca_name, ca_key, ca_name, ca=True))

    srv_key = _key()
    dns = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    srv = _issue(
        srv_key, _name("kube-apiserver"), ca_key, ca_name, server=True, dns=dns, ips=("127.0.0.1", service_ip)
    )
    _write_key(pki.apiserver_key, srv_key)
    _write_cert(pki.apiserver_crt, srv)

    admin_key = _key()
    admin = _issue(admin_key, _name("nbkube-admin", ("system:masters",)), ca_key, ca_name, client=True)
    _write_key(pki.admin_key, admin_key)
    _write_cert(pki.admin_crt, admin)

    fp_ca_key = _key()
    fp_ca_name = _name("nbkube-local-front-proxy-ca")
    _write_cert(pki.front_proxy_ca_crt, _issue(fp_ca_key, fp_ca_name, fp_ca_key, fp_ca_name, ca=True))
    fp_key = _key()
    _write_key(pki.front_proxy_client_key, fp_key)
    _write_cert(
        pki.front_proxy_client_crt,
        _issue(fp_key, _name(FRONT_PROXY_CLIENT), fp_ca_key, fp_ca_name, client=True),
    )

    sa_key = _key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
