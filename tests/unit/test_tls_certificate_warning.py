"""SIMULATOR_TLS_CERT and the CA warning: a certificate made the usual `openssl req -x509`
way (marked CA, nothing restricting its use) serves without a warning; a CA certificate kept
from serving by its key usage gets one warning, not one at each of mitmproxy's loads."""

import datetime
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mitmproxy.addons.tlsconfig import TlsConfig
from unit_support import API_KEY, clear_settings_env, make_config, settings_context

from aoai.runtime import tls

EKU = x509.oid.ExtendedKeyUsageOID


def key_usage(*, digital_signature=False, key_cert_sign=False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def certificate(*, ca: bool | None, usage: x509.KeyUsage | None = None, purposes=None):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if purposes is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    return builder.sign(key, hashes.SHA256()), key


@pytest.mark.parametrize(
    ("extensions", "signs_only"),
    [
        (dict(ca=True), False),  # openssl req -x509 -newkey … -nodes -subj /CN=localhost
        (dict(ca=None), False),
        (dict(ca=False, usage=key_usage(digital_signature=True)), False),
        (dict(ca=True, usage=key_usage(digital_signature=True, key_cert_sign=True)), False),
        (dict(ca=True, purposes=[EKU.SERVER_AUTH, EKU.CLIENT_AUTH]), False),
        (dict(ca=True, usage=key_usage(key_cert_sign=True)), True),  # as mitmproxy's own CA
        (dict(ca=True, purposes=[EKU.CLIENT_AUTH]), True),
    ],
)
def test_which_certificates_are_cas_not_meant_to_serve(extensions, signs_only):
    cert, _ = certificate(**extensions)
    assert tls.signs_only(cert) is signs_only


def write(tmp_path, cert, key):
    path = tmp_path / "cert.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key_pem)
    return path


def warnings_when_served(monkeypatch, tmp_path, caplog, cert_path) -> list[str]:
    """What is logged at WARNING while the simulator installs the certificate and mitmproxy's
    TLS addon loads it: on configure, and again when it starts running."""
    clear_settings_env(monkeypatch)
    tls = TlsConfig()
    tctx, addon = settings_context(make_config(), tls)
    with tctx, caplog.at_level(logging.WARNING):
        tctx.options.confdir = str(tmp_path / "conf")
        tctx.configure(addon, simulator_api_key=API_KEY, simulator_tls_cert=str(cert_path))
        addon.configure({"simulator_tls_cert"})  # configured again: the certificate is installed again
        tls.configure("confdir")  # what TlsConfig.running does
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_self_signed_certificate_marked_ca_serves_without_a_warning(monkeypatch, tmp_path, caplog):
    cert_path = write(tmp_path, *certificate(ca=True))
    assert warnings_when_served(monkeypatch, tmp_path, caplog, cert_path) == []


def test_a_ca_certificate_not_meant_to_serve_is_warned_about_once(monkeypatch, tmp_path, caplog):
    cert_path = write(tmp_path, *certificate(ca=True, usage=key_usage(key_cert_sign=True)))
    assert warnings_when_served(monkeypatch, tmp_path, caplog, cert_path) == [
        f"SIMULATOR_TLS_CERT: {cert_path} is a CA certificate whose key usage leaves out serving TLS; "
        "HTTPS clients may refuse it: use one issued for the host names"
    ]
