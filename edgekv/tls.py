"""TLS for edgekv: credentials for servers and channels, and a development CA.

Client port: server TLS (clients verify the node against the cluster CA).
Peer port: mutual TLS — a node accepts replication only from a certificate
signed by the cluster CA, and presents its own when dialing peers.
``edgekv certs init`` / ``edgekv certs issue`` create a CA and per-node
certificates (with the node's hosts as subject alternative names) for local
clusters and tests; production can use any CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgekv.config.model import TlsSettings
from edgekv.errors import ConfigError

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def server_credentials(
    tls: TlsSettings, node_id: str, *, require_client_auth: bool
) -> grpc.ServerCredentials:
    """This node's certificate; with ``require_client_auth`` peers must present one too."""
    return grpc.ssl_server_credentials(
        [(_read(tls.key_for(node_id), "TLS key"), _read(tls.cert_for(node_id), "TLS certificate"))],
        root_certificates=_read(tls.ca_file, "CA certificate"),
        require_client_auth=require_client_auth,
    )


def channel_credentials(tls: TlsSettings, node_id: str) -> grpc.ChannelCredentials:
    """Verifies the server against the CA and presents this node's certificate (mTLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "CA certificate"),
        private_key=_read(tls.key_for(node_id), "TLS key"),
        certificate_chain=_read(tls.cert_for(node_id), "TLS certificate"),
    )


# -- a development CA ---------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(
    directory: str | os.PathLike[str], name: str = "edgekv dev CA", days: int = 3650
) -> Path:
    """Write ca.pem and ca-key.pem (0600) into ``directory``; return the certificate path."""
    directory = Path(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / CA_KEY, _key_pem(key))
    (directory / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / CA_CERT


def issue_cert(
    directory: str | os.PathLike[str],
    node_id: str,
    hosts: Iterable[str],
    *,
    days: int = 365,
) -> tuple[Path, Path]:
    """Issue ``{node_id}.pem`` / ``{node_id}-key.pem`` signed by the CA in ``directory``.

    ``hosts`` (DNS names or IP addresses) become subject alternative names;
    localhost and 127.0.0.1 are always included. Usable as server and client cert.
    """
    directory = Path(directory)
    ca_key = serialization.load_pem_private_key(_read(directory / CA_KEY, "CA key"), None)
    ca_cert = x509.load_pem_x509_certificate(_read(directory / CA_CERT, "CA certificate"))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = directory / f"{node_id}.pem", directory / f"{node_id}-key.pem"
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
