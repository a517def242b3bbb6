"""Keyless clients end to end: Entra ID tokens over HTTPS, as Azure SDK applications connect.

A real mitmdump with its own confdir (so its CA file is this test's), the openai SDK with
`azure_ad_token_provider`, azure-ai-documentintelligence with a `TokenCredential`, both
trusting the CA file; refusals, signature mode, record mode and the user's own certificate."""

from __future__ import annotations

import datetime
import importlib.util
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from azure.ai.documentintelligence import DocumentIntelligenceClient
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import get_bearer_token_provider
from conftest import API_KEY, API_VERSION, ROOT, start_simulator
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fake_azure import FakeAzure
from openai import AuthenticationError, AzureOpenAI

sys.path.insert(0, str(ROOT / "addons"))
from aoai.runtime import entra

SCOPE = "https://cognitiveservices.azure.com/.default"
INVALID_TOKEN = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is "
    "incorrect (https://cognitiveservices.azure.com), or have expired.",
}
PDF = b"%PDF-1.7\n1 0 obj << /Type /Page >> endobj\n%%EOF\n"
ALLOWED_APP = "app-0000-allowed"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SimulatorCredential = load_example("token_credential").SimulatorCredential


def https_sim(folder: Path, env: dict[str, str] | None = None):
    """A simulator with its own confdir; returns (simulator, https URL, CA file)."""
    conf = folder / "mitmproxy"
    sim = start_simulator(folder, {"SIMULATOR_LATENCY": "false", **(env or {})}, args=["--set", f"confdir={conf}"])
    return sim, f"https://127.0.0.1:{sim.port}", conf / "mitmproxy-ca-cert.pem"


@pytest.fixture(scope="module")
def keyless(tmp_path_factory):
    """Claims mode for one tenant and two principals."""
    sim, url, ca = https_sim(
        tmp_path_factory.mktemp("keyless"),
        {
            "SIMULATOR_ENTRA_TOKENS": "claims",
            "SIMULATOR_ENTRA_TENANTS": entra.DEFAULT_TENANT,
            "SIMULATOR_ENTRA_PRINCIPALS": f"{entra.DEFAULT_OID},{ALLOWED_APP}",
        },
    )
    yield sim, url, ca
    sim.stop()


def mint(url: str, ca: Path, **body) -> str:
    answer = httpx.post(url + "/++/token", json=body, headers={"api-key": API_KEY}, verify=str(ca))
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def chat_status(url: str, ca: Path, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(ca),
    )


def test_the_openai_sdk_with_a_token_provider_over_https(keyless):
    sim, url, ca = keyless
    assert ca.exists()
    assert f"clients trust the CA file {ca}" in sim.log()  # the banner says where it is
    credential = SimulatorCredential(url, API_KEY, verify=str(ca))
    with httpx.Client(verify=str(ca)) as http_client:
        client = AzureOpenAI(
            azure_endpoint=url,
            api_version=API_VERSION,
            max_retries=0,
            http_client=http_client,
            azure_ad_token_provider=get_bearer_token_provider(credential, SCOPE),
        )
        answer = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], max_tokens=8
        )
        assert answer.choices[0].message.content
        assert len(client.embeddings.create(model="text-embedding-3-small", input="keyless").data) == 1
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    # Without the CA the same client refuses the simulator's certificate.
    with httpx.Client() as untrusting:
        client = AzureOpenAI(
            azure_endpoint=url,
            api_version=API_VERSION,
            max_retries=0,
            http_client=untrusting,
            azure_ad_token_provider=get_bearer_token_provider(credential, SCOPE),
        )
        with pytest.raises(Exception) as caught:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert "certificate" in repr(caught.value.__cause__ or caught.value).lower()


class H2First(ssl.SSLContext):
    def set_alpn_protocols(self, protocols):
        super().set_alpn_protocols(sorted(protocols, key=lambda p: p != "h2"))

    @classmethod
    def trusting(cls, ca: Path) -> H2First:
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(ca))
        return context


def test_the_same_port_answers_http2_and_plain_http(keyless):
    sim, url, ca = keyless
    token = mint(url, ca)
    # mitmproxy honours the client's order of ALPN protocols and httpx lists http/1.1 first;
    # a client that prefers h2 (curl, browsers, .NET) gets HTTP/2.
    with httpx.Client(http2=True, verify=H2First.trusting(ca)) as h2:
        answer = h2.post(
            f"{url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200 and answer.http_version == "HTTP/2"
    assert httpx.get(sim.url + "/++/health").status_code == 200


def test_document_intelligence_with_a_token_credential_over_https(keyless):
    _, url, ca = keyless
    with DocumentIntelligenceClient(
        url, SimulatorCredential(url, API_KEY, verify=str(ca)), connection_verify=str(ca), polling_interval=0.1
    ) as client:
        result = client.begin_analyze_document("prebuilt-layout", PDF, content_type="application/pdf").result()
    assert len(result.pages) == 1 and result.content
    # A principal the simulator does not allow gets Azure's PermissionDenied, raised by azure-core.
    with (
        DocumentIntelligenceClient(
            url, SimulatorCredential(url, API_KEY, verify=str(ca), oid="intruder-oid"), connection_verify=str(ca)
        ) as client,
        pytest.raises(ClientAuthenticationError) as caught,
    ):
        client.begin_analyze_document("prebuilt-layout", PDF, content_type="application/pdf")
    assert caught.value.error.code == "PermissionDenied"
    assert "The principal `intruder-oid` lacks the required data action" in caught.value.error.message


def test_expired_foreign_malformed_and_stranger_tokens_get_azures_answers(keyless):
    sim, url, ca = keyless
    refused = {
        "expired": mint(url, ca, expiresIn=-3600),
        "wrong audience": mint(url, ca, aud="https://management.azure.com/"),
        "other tenant": mint(url, ca, tid="another-tenant"),
        "malformed": "eyJhbGciOiJSUzI1NiJ9.not-json.sig",
    }
    for why, token in refused.items():
        answer = chat_status(url, ca, token)
        assert (answer.status_code, answer.json()) == (401, INVALID_TOKEN), why
    stranger = mint(url, ca, oid="99999999-0000-0000-0000-000000000000")
    answer = chat_status(url, ca, stranger)
    assert answer.status_code == 401
    assert answer.json() == {
        "error": {
            "code": "PermissionDenied",
            "message": (
                "The principal `99999999-0000-0000-0000-000000000000` lacks the required data action "
                "`Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform "
                "`POST /openai/deployments/{deployment-id}/chat/completions` operation."
            ),
        }
    }
    # A service principal allowed by its application id passes.
    assert chat_status(url, ca, mint(url, ca, oid="sp-object", appid=ALLOWED_APP)).status_code == 200
    # The openai SDK raises its authentication error, as against Azure.
    with httpx.Client(verify=str(ca)) as http_client:
        client = AzureOpenAI(
            azure_endpoint=url,
            api_version=API_VERSION,
            max_retries=0,
            http_client=http_client,
            azure_ad_token=refused["expired"],
        )
        with pytest.raises(AuthenticationError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    # The key and Ocp-Apim-Subscription-Key still work beside tokens.
    for header in ("api-key", "Ocp-Apim-Subscription-Key"):
        answer = httpx.post(
            f"{url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            headers={header: API_KEY},
            verify=str(ca),
        )
        assert answer.status_code == 200
    log = sim.log()
    assert "bearer token refused: the token has expired" in log
    for token in [*refused.values(), stranger]:
        assert token not in log
        assert token.split(".")[1] not in log  # not even the claims part


def mint_script(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mint_token.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_signature_mode_accepts_the_jwks_key_and_refuses_another(tmp_path):
    # The documented way: the script makes a key and its JWKS; the simulator gets only the JWKS.
    key_file, jwks = tmp_path / "key.pem", tmp_path / "jwks.json"
    first = mint_script("--new-key", str(key_file), "--jwks", str(jwks))
    assert "PRIVATE" not in jwks.read_text() and '"d"' not in jwks.read_text()
    key = entra.load_private_key(key_file.read_bytes())
    sim, url, ca = https_sim(tmp_path, {"SIMULATOR_ENTRA_TOKENS": "signature", "SIMULATOR_ENTRA_JWKS": str(jwks)})
    try:
        assert chat_status(url, ca, first).status_code == 200
        signed = mint_script("--key", str(key_file), "--oid", "someone")
        assert chat_status(url, ca, signed).status_code == 200
        impostor = entra.load_private_key(entra.new_private_key_pem())
        forged = entra.mint(entra.token_claims(), impostor, kid=entra.key_id(key))  # claims to be the JWKS key
        for token in (forged, entra.mint(entra.token_claims(), impostor), entra.mint(entra.token_claims())):
            answer = chat_status(url, ca, token)
            assert (answer.status_code, answer.json()) == (401, INVALID_TOKEN)
        assert "bearer token refused: the token's signature does not match the key in the JWKS" in sim.log()
        # The simulator holds no private key, so it mints none.
        assert httpx.post(url + "/++/token", headers={"api-key": API_KEY}, verify=str(ca)).status_code == 409
    finally:
        sim.stop()


def test_a_bad_jwks_file_stops_the_start_naming_the_variable(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text("{not json")
    sim = start_simulator(
        tmp_path, {"SIMULATOR_ENTRA_TOKENS": "signature", "SIMULATOR_ENTRA_JWKS": str(jwks)}, wait=False
    )
    try:
        sim.process.wait(30)
        assert sim.process.returncode != 0
        assert f"SIMULATOR_ENTRA_JWKS: {jwks}: not valid JSON" in sim.log()
    finally:
        sim.stop()


def test_record_mode_passes_the_token_to_azure_and_never_saves_or_logs_it(tmp_path):
    token = entra.mint(entra.token_claims())
    folder = tmp_path / "recordings"
    with FakeAzure(bearer=token) as upstream:
        sim = start_simulator(
            tmp_path,
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "RECORDING_DIR": str(folder),
                "LOG_LEVEL": "DEBUG",
            },
        )
        try:
            client = AzureOpenAI(azure_endpoint=sim.url, api_version=API_VERSION, azure_ad_token=token, max_retries=0)
            answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "Upstream says: hi"
        finally:
            sim.stop()
    (received,) = upstream.requests
    headers = {name.lower(): value for name, value in received["headers"].items()}
    assert headers["authorization"] == f"Bearer {token}"  # Azure judges it, as before
    assert "api-key" not in headers
    files = list(folder.glob("*.yaml"))
    assert files
    for path in [*files, *tmp_path.glob("*.log")]:
        text = path.read_text()
        assert token not in text and token.split(".")[1] not in text, path


def self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_the_users_certificate_is_served_for_its_host_name(tmp_path):
    host = "my-resource.openai.example.test"
    cert, key = self_signed(tmp_path, host)
    sim, url, _ = https_sim(tmp_path, {"SIMULATOR_TLS_CERT": str(cert), "SIMULATOR_TLS_KEY": str(key)})
    try:
        # A client that trusts only the user's certificate, reaching the simulator by that name.
        trusting_cert = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trusting_cert) as client:
            answer = client.get(url + "/++/health", extensions={"sni_hostname": host})
        assert answer.status_code == 200
        assert f"SIMULATOR_TLS_CERT serves {host}" in sim.log()
        # Other names still get the simulator's CA, which that client does not trust.
        with httpx.Client(verify=trusting_cert) as client, pytest.raises(httpx.ConnectError):
            client.get(url + "/++/health", extensions={"sni_hostname": "other.example.test"})
    finally:
        sim.stop()
