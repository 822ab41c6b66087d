"""Development credentials for TLS, mutual TLS and device tokens, made in one place.

`write_dev_certificates` writes a development CA with a server and a client certificate (what
`agilenn certs dev` writes); `write_dev_security` adds a token file with one device's token and that
token in a file of its own, everything a secure run on one machine or one test cluster needs. For
production, use certificates from your own CA and `agilenn tokens add`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloud_worker.tokens import TokenFile, issue_token, write_token_file

DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
CERTIFICATE_FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")


@dataclass(frozen=True)
class DevCertificates:
    """The paths `write_dev_certificates` wrote."""

    folder: Path

    @property
    def ca_pem(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def client_pem(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"


@dataclass(frozen=True)
class DevSecurity:
    """A development CA and certificates, a token file and one device's token, all in one folder."""

    certificates: DevCertificates
    tokens_file: Path
    token_file: Path  # the device's token, as `agilenn device run --token-file` reads it

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def serve_fields(self) -> dict[str, str]:
        """ServeConfig fields: TLS, mutual TLS and tokens."""
        return {"tls_cert_file": str(self.certificates.server_pem), "tls_key_file": str(self.certificates.server_key),
                "client_ca_file": str(self.certificates.ca_pem), "tokens_file": str(self.tokens_file)}

    def device_fields(self) -> dict[str, str]:
        """DeviceConfig fields: the CA, the client certificate and the token."""
        return {"ca_file": str(self.certificates.ca_pem), "cert_file": str(self.certificates.client_pem),
                "key_file": str(self.certificates.client_key), "token_file": str(self.token_file)}


def write_dev_security(folder: str | Path, device: str = "demo-device",
                       hosts: list[str] | tuple[str, ...] = ()) -> DevSecurity:
    """Certificates in `folder`/certs (the server's valid for localhost and `hosts` too), a token file
    with one token for `device`, and that token in a file readable by its owner only."""
    folder = Path(folder)
    certificates = write_dev_certificates(folder / "certs", hosts)
    tokens = TokenFile()
    token, _ = issue_token(tokens, device)
    write_token_file(folder / "tokens.yaml", tokens)
    _write(folder / "device.token", token.encode("ascii") + b"\n", private=True)
    return DevSecurity(certificates, folder / "tokens.yaml", folder / "device.token")


def write_dev_certificates(out: str | Path, hosts: list[str] | tuple[str, ...] = (), days: int = 365,
                           client_name: str = "agilenn-device", force: bool = False) -> DevCertificates:
    """Write a dev CA, a server certificate (SANs: localhost, 127.0.0.1, ::1 and `hosts`) and a client
    certificate, each with its key, into `out`; refuses to replace existing files unless `force`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    existing = [name for name in CERTIFICATE_FILES if (folder / name).exists()]
    if existing and not force:
        raise FileExistsError(f"{folder} already holds {', '.join(existing)}; pass --force to replace them")
    now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate a little clock skew

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def cert_pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agilenn development"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("agilenn development CA")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))

    def leaf(common_name: str, usage, alternative_names=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(common_name)).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if alternative_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_hosts = [*DEFAULT_SERVER_NAMES, *hosts]
    server_key, server_cert = leaf("agilenn worker", ExtendedKeyUsageOID.SERVER_AUTH,
                                   _subject_alternative_names(server_hosts))
    # verifiers (cryptography's among them) want a subject alternative name in a client certificate too
    client_key, client_cert = leaf(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(client_name)])

    _write(folder / "ca.pem", cert_pem(ca_cert), private=False)
    _write(folder / "ca.key", key_pem(ca_key), private=True)
    _write(folder / "server.pem", cert_pem(server_cert), private=False)
    _write(folder / "server.key", key_pem(server_key), private=True)
    _write(folder / "client.pem", cert_pem(client_cert), private=False)
    _write(folder / "client.key", key_pem(client_key), private=True)
    return DevCertificates(folder)


def _subject_alternative_names(hosts) -> list:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        host = host.strip().strip("[]")
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _write(path: Path, data: bytes, private: bool) -> None:
    path.unlink(missing_ok=True)  # so that a key is never written into a file others can already read
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
