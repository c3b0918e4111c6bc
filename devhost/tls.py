"""Throwaway TLS for loopback services: a CA chain and a server certificate, made at runtime.

    tls = LoopbackTls.generate()
    with ServerThread(app_factory, ssl_context=tls.server_context()) as server:
        ...  # server.base_url is https://127.0.0.1:PORT
    client_ctx = tls.client_context()  # trusts only the generated CA

Clients that build their own verified context (aiohttp creates one when it is imported) can be
pointed at the CA with `SSL_CERT_FILE=<tls.write(dir).ca>`, which `ssl.create_default_context()`
honours; set it before they start. Nothing here is a secret worth keeping: a new CA is made per
call and its key never leaves the process (unless written with `write`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate (to trust), the server certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agent-run relay test bed"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _key_usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certs,
        content_commitment=False,
        key_encipherment=not sign_certs,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    validity: tuple[dt.datetime, dt.datetime],
    path_length: int | None,
    names: Sequence[str] = (),
) -> x509.Certificate:
    """A certificate for `key`; a CA one when `path_length` is not None."""
    is_ca = path_length is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
        .add_extension(_key_usage(sign_certs=is_ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if not is_ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(_san(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class LoopbackTls:
    """A root CA certificate, and a server certificate with its chain and key, all PEM.

    Shaped like an Azure endpoint's: an RSA-2048 server certificate issued by an RSA-4096
    intermediate CA under an RSA-2048 root, the server sending its certificate and the
    intermediate, the client trusting the root only.
    """

    ca_pem: bytes
    cert_pem: bytes  # the server certificate, then the intermediate
    key_pem: bytes = field(repr=False)

    @classmethod
    def generate(
        cls, names: Sequence[str] = LOOPBACK_NAMES, valid_for: dt.timedelta = dt.timedelta(days=1)
    ) -> LoopbackTls:
        """A new chain for `names` (IPs go in IP SANs)."""
        now = dt.datetime.now(dt.UTC)
        validity = (now - dt.timedelta(minutes=5), now + valid_for)
        root_key, server_key = _rsa_key(), _rsa_key()
        intermediate_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        root_name = _name("agent-run relay test bed root CA")
        intermediate_name = _name("agent-run relay test bed TLS issuing CA")
        root = _certificate(root_name, root_key, root_name, root_key, validity, path_length=1)
        intermediate = _certificate(
            intermediate_name, intermediate_key, root_name, root_key, validity, path_length=0
        )
        server = _certificate(
            _name(names[0]),
            server_key,
            intermediate_name,
            intermediate_key,
            validity,
            path_length=None,
            names=names,
        )
        pem = serialization.Encoding.PEM
        return cls(
            ca_pem=root.public_bytes(pem),
            cert_pem=server.public_bytes(pem) + intermediate.public_bytes(pem),
            key_pem=server_key.private_bytes(
                pem,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        )

    def write(self, directory: Path) -> TlsFiles:
        """Write the three PEM files into `directory` (the key readable by the owner only)."""
        files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        files.ca.write_bytes(self.ca_pem)
        files.cert.write_bytes(self.cert_pem)
        files.key.touch(mode=0o600)
        files.key.write_bytes(self.key_pem)
        return files

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the server certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as directory:
            files = self.write(Path(directory))
            context.load_cert_chain(files.cert, files.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the generated CA (and nothing else)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem.decode())
        return context


def server_context_from_files(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context from PEM files written by `LoopbackTls.write`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
