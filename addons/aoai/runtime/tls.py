"""The certificate HTTPS clients are shown: SIMULATOR_TLS_CERT (and SIMULATOR_TLS_KEY) read
and checked, as mitmproxy's `certs` option wants it (the chain and its key in one file)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .config import ConfigError

CA_FILE = "mitmproxy-ca-cert.pem"  # the CA clients trust, in mitmproxy's confdir
TLS_FILE = "simulator-tls.pem"  # SIMULATOR_TLS_CERT and its key in one file, as mitmproxy reads them


@dataclass(frozen=True)
class TlsCertificate:
    pem: bytes  # the certificate chain, then its private key
    names: tuple[str, ...]  # the host names and addresses it serves
    ca_only: bool = False  # a CA certificate its own extensions keep from serving TLS (see signs_only)


def signs_only(cert: x509.Certificate) -> bool:
    """A CA certificate not meant to serve: its key usage lacks digital signature and key
    encipherment, or its extended key usage lacks server authentication. `openssl req -x509`
    marks the certificates it makes CA but restricts neither, and they serve well."""
    extensions = cert.extensions
    try:
        if not extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        if not (usage.digital_signature or usage.key_encipherment):
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return x509.ExtendedKeyUsageOID.SERVER_AUTH not in purposes
    except x509.ExtensionNotFound:
        return False


def tls_certificate(cert_file: str | None, key_file: str | None = None) -> TlsCertificate | None:
    """SIMULATOR_TLS_CERT (and _KEY) read and checked; None when unset; raises ConfigError."""
    cert_path = os.path.expanduser((cert_file or "").strip())
    key_path = os.path.expanduser((key_file or "").strip())
    if not cert_path:
        if key_path:
            raise ConfigError("SIMULATOR_TLS_KEY: set SIMULATOR_TLS_CERT too, the certificate of this key")
        return None
    try:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
    except OSError as e:
        raise ConfigError(f"SIMULATOR_TLS_CERT: {cert_path}: cannot read the certificate ({e.strerror})") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"SIMULATOR_TLS_CERT: {cert_path}: no PEM certificate in it") from None
    key_pem, key_source = cert_pem, cert_path
    if key_path:
        try:
            with open(key_path, "rb") as f:
                key_pem = f.read()
        except OSError as e:
            raise ConfigError(f"SIMULATOR_TLS_KEY: {key_path}: cannot read the key ({e.strerror})") from None
        key_source = key_path
    try:
        key = serialization.load_pem_private_key(_pem_key_block(key_pem), password=None)
    except (ValueError, TypeError):
        variable = "SIMULATOR_TLS_KEY" if key_path else "SIMULATOR_TLS_CERT"
        raise ConfigError(
            f"{variable}: {key_source}: no unencrypted PEM private key in it"
            + ("" if key_path else "; give the key with SIMULATOR_TLS_KEY")
        ) from None
    if key.public_key() != chain[0].public_key():
        raise ConfigError(
            f"SIMULATOR_TLS_KEY: {key_source}: the key is not the certificate's (SIMULATOR_TLS_CERT {cert_path})"
        )
    names: list[str] = []
    try:
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names += [str(a.value) for a in chain[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if not names:
        raise ConfigError(f"SIMULATOR_TLS_CERT: {cert_path}: the certificate names no host")
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TlsCertificate(pem, tuple(dict.fromkeys(names)), signs_only(chain[0]))


def _pem_key_block(pem: bytes) -> bytes:
    """The private key block of a PEM file that may hold certificates too."""
    match = re.search(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", pem, re.S)
    return match.group(0) if match else pem
