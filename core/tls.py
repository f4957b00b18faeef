"""TLS for gRPC and the dashboard, mutual TLS as an option, and `fleet certs`: a development CA.

Servers take `--tls-cert/--tls-key` (and `--tls-client-ca` to require client certificates:
mTLS); robots take `--tls-ca` (and `--tls-cert/--tls-key` for mTLS). Plaintext needs
`--insecure` on both sides and is logged as a warning at start.

`fleet certs --out DIR --hosts learner.lab,10.0.0.5 --clients arm-1,arm-2` writes a CA, one
server certificate for those names (localhost and 127.0.0.1 always included) and one client
certificate per robot. It is for development and small labs; a deployment with its own PKI
(cert-manager, a corporate CA) passes its own files to the same flags.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("core.tls")


@dataclass(frozen=True)
class ServerTLS:
    cert: Path
    key: Path
    client_ca: Path | None = None  # mTLS: only clients with a certificate from this CA connect

    def grpc_credentials(self) -> grpc.ServerCredentials:
        root = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=root,
                                           require_client_auth=root is not None)


@dataclass(frozen=True)
class ClientTLS:
    ca: Path                  # the CA that signed the learner's certificate
    cert: Path | None = None  # mTLS: this robot's certificate and key
    key: Path | None = None

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both --tls-cert and --tls-key")
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(), private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None)


def warn_insecure(what: str) -> None:
    log.warning("!" * 78)
    log.warning("INSECURE: %s speaks plaintext (--insecure). Tokens and data cross the network unencrypted;", what)
    log.warning("use --tls-cert/--tls-key (fleet certs makes a development CA) beyond a trusted loopback.")
    log.warning("!" * 78)


def make_certs(out: Path, hosts: list[str], clients: list[str], days: int = 365) -> dict[str, Path]:
    """A development CA, a server certificate for `hosts` and a client certificate per name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    written: dict[str, Path] = {}

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetlearn"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write(stem: str, key, cert) -> None:
        key_path, cert_path = out / f"{stem}.key", out / f"{stem}.pem"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        written[stem] = cert_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("fleetlearn development CA"))
          .issuer_name(name("fleetlearn development CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write("ca", ca_key, ca)

    def leaf(common: str, usage, alt_names) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    alt = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", *hosts]):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    write("server", *leaf(hosts[0] if hosts else "localhost", ExtendedKeyUsageOID.SERVER_AUTH, alt))
    for client in clients:
        write(f"client-{client}", *leaf(client, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(client)]))
    return written
