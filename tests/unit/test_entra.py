"""Entra ID bearer tokens: judged by claims or by signature, refused with Azure's answers, the
settings that choose how, and the /++/token that mints one."""

import base64
import datetime
import json
import logging

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mitmproxy import hooks
from mitmproxy.test import taddons
from unit_support import (
    API_KEY,
    chat_path,
    clear_settings_env,
    json_of,
    make_config,
    make_flow,
    settings_context,
    start,
)

from aoai.runtime import entra, tls
from aoai.runtime.config import ConfigError, SimulatorConfig
from aoai.runtime.entra_policy import entra_mode, entra_policy
from aoai.runtime.state import context_of
from aoai.stages import auth
from aoai.stages.auth import Auth
from aoai.stages.management import Management

CLAIMS = entra.TokenPolicy(mode="claims")
INVALID_TOKEN = {"statusCode": 401, "message": auth.INVALID_TOKEN}


def token(**kwargs) -> str:
    return entra.mint(entra.token_claims(**kwargs))


def bearer_flow(value: str, path: str | None = None, method: str = "POST"):
    return make_flow(method, path or chat_path(), key=None, headers={"Authorization": f"Bearer {value}"})


def run_auth(flow, policy: entra.TokenPolicy = CLAIMS, **changes):
    addon = Auth(make_config(entra=policy, **changes))
    with taddons.context(addon):
        addon.request(flow)
    return flow.response


# judge(): plain values in, a verdict out.


def test_a_fresh_token_for_azure_ai_services_is_accepted_in_claims_mode():
    for audience in entra.AZURE_AUDIENCES:
        verdict = entra.judge(token(audience=audience), CLAIMS)
        assert verdict.accepted, (audience, verdict.reason)
        assert verdict.principal == entra.DEFAULT_OID


@pytest.mark.parametrize(
    "bad, reason",
    [
        (dict(lifetime_s=-entra.LEEWAY_S - 60), "the token has expired"),
        (dict(audience="https://management.azure.com/"), "the token's audience is not one of"),
        (dict(extra={"nbf": 2**40}), "the token is not valid yet (nbf)"),
    ],
)
def test_expired_early_or_foreign_tokens_are_refused(bad, reason):
    verdict = entra.judge(token(**bad), CLAIMS)
    assert not verdict.accepted and verdict.reason.startswith(reason)


def test_a_token_just_past_expiry_is_within_the_leeway():
    assert entra.judge(token(lifetime_s=-30), CLAIMS).accepted


@pytest.mark.parametrize("text", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", ""])
def test_unreadable_tokens_are_refused(text):
    verdict = entra.judge(text, CLAIMS)
    assert not verdict.accepted and not verdict.denied


def test_a_token_without_expiry_is_refused():
    claims = entra.token_claims()
    del claims["exp"]
    assert entra.judge(entra.mint(claims), CLAIMS).reason == "the token has no 'exp' claim"


def test_tenants_and_principals_narrow_who_is_accepted():
    policy = entra.TokenPolicy(mode="claims", tenants=frozenset({"t1"}), principals=frozenset({"o1", "app1"}))
    assert entra.judge(token(tenant="t1", oid="o1"), policy).accepted
    assert entra.judge(token(tenant="t1", oid="someone", appid="app1"), policy).accepted  # a service principal
    other_tenant = entra.judge(token(tenant="t2", oid="o1"), policy)
    assert not other_tenant.accepted and not other_tenant.denied
    stranger = entra.judge(token(tenant="t1", oid="o2"), policy)
    assert not stranger.accepted and stranger.denied and stranger.principal == "o2"


def test_configured_audiences_replace_azures():
    policy = entra.TokenPolicy(mode="claims", audiences=("api://my-gateway",))
    assert entra.judge(token(audience="api://my-gateway"), policy).accepted
    assert not entra.judge(token(), policy).accepted


def test_off_accepts_nothing():
    assert not entra.judge(token(), entra.TokenPolicy()).accepted


@pytest.fixture
def signer(tmp_path):
    """(private key, signature-mode policy trusting it, the JWKS file)."""
    key = entra.load_private_key(entra.new_private_key_pem())
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(entra.jwks_of(key)))
    return key, entra.TokenPolicy(mode="signature", keys=entra.load_jwks(str(path))), path


def test_signature_mode_accepts_the_jwks_key_and_nothing_else(signer):
    key, policy, _ = signer
    assert entra.judge(entra.mint(entra.token_claims(), key), policy).accepted
    impostor = entra.load_private_key(entra.new_private_key_pem())
    forged = entra.judge(entra.mint(entra.token_claims(), impostor, kid=entra.key_id(key)), policy)
    assert forged.reason == "the token's signature does not match the key in the JWKS"
    assert "not in the JWKS" in entra.judge(entra.mint(entra.token_claims(), impostor), policy).reason
    assert "not in the JWKS" in entra.judge(token(), policy).reason  # claims mode's throwaway key
    hs = jwt.encode(entra.token_claims(), "a-shared-secret-of-thirty-two-bytes!", algorithm="HS256")
    assert "algorithm 'HS256' is not accepted" in entra.judge(hs, policy).reason
    unsigned = jwt.encode(entra.token_claims(), None, algorithm="none")
    assert not entra.judge(unsigned, policy).accepted
    # A valid signature does not excuse the claims.
    assert entra.judge(entra.mint(entra.token_claims(lifetime_s=-3600), key), policy).reason == "the token has expired"


def test_signature_mode_with_an_ec_key(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.json"
    path.write_text(json.dumps(entra.jwks_of(key)))
    policy = entra.TokenPolicy(mode="signature", keys=entra.load_jwks(str(path)))
    assert entra.judge(entra.mint(entra.token_claims(), key), policy).accepted


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ('{"keys": 1}', 'expected a JWKS, a JSON object with a "keys" list'),
        ('{"keys": []}', "the JWKS has no keys"),
        ('{"keys": [{"kty": "RSA"}]}', "keys[0]: not a usable signing key"),
    ],
)
def test_bad_jwks_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "jwks.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        entra.load_jwks(str(path))


def test_a_jwks_with_a_private_key_is_refused(tmp_path):
    key = entra.load_private_key(entra.new_private_key_pem())
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [private]}))
    with pytest.raises(ValueError, match="a private key"):
        entra.load_jwks(str(path))


# The auth stage: Azure's answers.


def test_an_accepted_token_passes_the_auth_stage():
    assert run_auth(bearer_flow(token())) is None


@pytest.mark.parametrize(
    "value",
    [token(lifetime_s=-3600), token(audience="https://graph.microsoft.com"), "garbage", token(tenant="elsewhere")],
)
def test_refused_tokens_get_azures_401(value, caplog):
    policy = entra.TokenPolicy(mode="claims", tenants=frozenset({entra.DEFAULT_TENANT}))
    with caplog.at_level(logging.INFO, logger="aoai"):
        response = run_auth(bearer_flow(value), policy)
    assert response.status_code == 401
    assert json_of(response) == INVALID_TOKEN
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "bearer token refused" in logged and value not in logged


def test_a_principal_not_allowed_gets_permission_denied():
    policy = entra.TokenPolicy(mode="claims", principals=frozenset({"someone-else"}))
    response = run_auth(bearer_flow(token(oid="11111111-2222-3333-4444-555555555555")), policy)
    assert response.status_code == auth.PERMISSION_DENIED_STATUS == 401
    assert json_of(response) == {
        "error": {
            "code": "PermissionDenied",
            "message": (
                "The principal `11111111-2222-3333-4444-555555555555` lacks the required data action "
                "`Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform "
                "`POST /openai/deployments/{deployment-id}/chat/completions` operation."
            ),
        }
    }


def test_permission_denied_names_each_routes_action():
    policy = entra.TokenPolicy(mode="claims", principals=frozenset({"someone-else"}))
    embeddings = json_of(
        run_auth(bearer_flow(token(), "/openai/deployments/e/embeddings?api-version=2024-10-21"), policy)
    )["error"]["message"]
    assert "`Microsoft.CognitiveServices/accounts/OpenAI/deployments/embeddings/action`" in embeddings
    assert "`POST /openai/deployments/{deployment-id}/embeddings`" in embeddings
    analyze = json_of(
        run_auth(
            bearer_flow(token(), "/documentintelligence/documentModels/prebuilt-layout:analyze?api-version=2024-11-30"),
            policy,
        )
    )["error"]["message"]
    assert "`POST /documentintelligence/documentModels/{modelId}:analyze`" in analyze
    assert "FormRecognizer/documentmodels:analyze/action" in analyze


def test_keys_and_registered_strings_still_pass_beside_tokens():
    config_changes = {"bearer_tokens": {"registered"}}
    assert run_auth(bearer_flow("registered"), **config_changes) is None
    assert run_auth(bearer_flow(API_KEY)) is None
    assert run_auth(make_flow(path=chat_path(), key=None, headers={"Ocp-Apim-Subscription-Key": API_KEY})) is None
    # A wrong key is judged as a key, whatever token comes with it.
    wrong = make_flow(path=chat_path(), key="wrong", headers={"Authorization": f"Bearer {token()}"})
    assert json_of(run_auth(wrong))["error"]["code"] == "401"


def test_record_mode_without_an_azure_key_leaves_tokens_to_azure_when_the_policy_is_off():
    stranger = token(audience="https://graph.microsoft.com")
    flow = bearer_flow(stranger)
    assert run_auth(flow, entra.TokenPolicy(), mode="record") is None
    assert context_of(flow).passed_through  # forwarded for Azure to judge, never answered from recordings
    assert run_auth(bearer_flow(stranger), entra.TokenPolicy(), mode="record", azure_openai_key="k").status_code == 401


def test_record_mode_with_the_policy_on_judges_tokens_itself():
    stranger = token(audience="https://graph.microsoft.com")
    assert run_auth(bearer_flow(stranger), mode="record").status_code == 401
    accepted = bearer_flow(token())
    assert run_auth(accepted, mode="record") is None
    assert not context_of(accepted).passed_through  # vouched for: recordings may answer it


# Settings.


def policy(mode="off", audiences=(), tenants=(), principals=(), jwks=None):
    return entra_policy(mode, audiences, tenants, principals, jwks)


def test_the_policy_comes_from_the_settings(signer):
    _, _, path = signer
    claims = policy(entra_mode("Claims"), tenants=["t1", " t2"], principals=["o1"])
    assert claims.mode == "claims" and claims.tenants == {"t1", "t2"} and claims.principals == {"o1"}
    assert claims.audiences == entra.AZURE_AUDIENCES
    assert len(policy("signature", jwks=str(path)).keys) == 1
    assert policy().mode == "off"
    assert [entra_mode(t) for t in ("", "on", "TRUE", "false", " signature ")] == [
        "off",
        "claims",
        "claims",
        "off",
        "signature",
    ]


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(mode="maybe"), "SIMULATOR_ENTRA_TOKENS: unknown mode 'maybe'; use off, claims or signature"),
        (dict(mode="signature"), "SIMULATOR_ENTRA_JWKS: signature mode needs the JWKS file"),
        (
            dict(mode="signature", jwks="/nowhere/jwks.json"),
            "SIMULATOR_ENTRA_JWKS: /nowhere/jwks.json: cannot read the JWKS file (No such file or directory)",
        ),
        (
            dict(mode="claims", jwks="jwks.json"),
            "SIMULATOR_ENTRA_JWKS: used only when SIMULATOR_ENTRA_TOKENS=signature (it is claims)",
        ),
    ],
)
def test_bad_token_settings_name_the_variable(values, message):
    with pytest.raises(ConfigError) as caught:
        policy(**values)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_an_unknown_entra_mode_in_the_environment_stops_the_start(monkeypatch, caplog):
    clear_settings_env(monkeypatch)
    monkeypatch.setenv("SIMULATOR_ENTRA_TOKENS", "maybe")
    tctx, _ = settings_context(make_config())
    with tctx, caplog.at_level(logging.ERROR):
        tctx.master.addons.trigger(hooks.ConfigureHook(set(tctx.options.keys())))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "Cannot start the simulator: SIMULATOR_ENTRA_TOKENS: expected off, claims or signature, got 'maybe'"
    ]


def test_a_bad_jwks_stops_the_start_with_one_line(monkeypatch, tmp_path, caplog):
    clear_settings_env(monkeypatch)
    monkeypatch.setenv("SIMULATOR_ENTRA_TOKENS", "signature")
    monkeypatch.setenv("SIMULATOR_ENTRA_JWKS", str(tmp_path / "missing.json"))
    tctx, _ = settings_context(make_config())
    with tctx, caplog.at_level(logging.ERROR):
        # What mitmproxy does once the script is loaded: configure with every option.
        tctx.master.addons.trigger(hooks.ConfigureHook(set(tctx.options.keys())))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"Cannot start the simulator: SIMULATOR_ENTRA_JWKS: {tmp_path / 'missing.json'}: cannot read the JWKS "
        f"file (No such file or directory)"
    ]


def self_signed(tmp_path, names=("aoai.example.test",), *, key_in_cert=False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + (key_pem if key_in_cert else b""))
    key_path.write_bytes(key_pem)
    return cert_path, key_path


def test_the_users_certificate_is_read_with_its_names(tmp_path):
    cert, key = self_signed(tmp_path, ("aoai.example.test", "*.openai.example.test"))
    found = tls.tls_certificate(str(cert), str(key))
    assert found.names == ("aoai.example.test", "*.openai.example.test")
    assert b"PRIVATE KEY" in found.pem and b"CERTIFICATE" in found.pem
    together, _ = self_signed(tmp_path, key_in_cert=True)
    assert tls.tls_certificate(str(together)).names == ("aoai.example.test",)


def test_bad_certificate_settings_name_the_variable(tmp_path):
    cert, key = self_signed(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, other_key = self_signed(other_dir)
    cases = [
        (dict(cert_file=str(cert)), "SIMULATOR_TLS_CERT: "),  # no key in it, none given
        (dict(cert_file=str(cert), key_file=str(other_key)), "SIMULATOR_TLS_KEY: "),
        (dict(cert_file=str(tmp_path / "none.pem")), "SIMULATOR_TLS_CERT: "),
        (dict(cert_file=str(key), key_file=str(key)), "SIMULATOR_TLS_CERT: "),
        (dict(cert_file=None, key_file=str(key)), "SIMULATOR_TLS_KEY: set SIMULATOR_TLS_CERT too"),
    ]
    for values, prefix in cases:
        with pytest.raises(ConfigError) as caught:
            tls.tls_certificate(**values)
        assert str(caught.value).startswith(prefix), (values, str(caught.value))


def test_the_certificate_reaches_mitmproxys_certs_option(monkeypatch, tmp_path):
    clear_settings_env(monkeypatch)
    cert, key = self_signed(tmp_path, ("aoai.example.test", "other.example.test"))
    tctx, addon = settings_context(make_config())
    with tctx:
        tctx.options.confdir = str(tmp_path / "conf")
        tctx.configure(addon, simulator_api_key=API_KEY, simulator_tls_cert=str(cert), simulator_tls_key=str(key))
        combined = tmp_path / "conf" / tls.TLS_FILE
        assert tctx.options.certs == [f"aoai.example.test={combined}", f"other.example.test={combined}"]
        assert combined.stat().st_mode & 0o077 == 0  # the key is private
        tctx.configure(addon, simulator_tls_cert=None, simulator_tls_key=None)
        assert tctx.options.certs == []


# /++/token.


@pytest.fixture
def management(monkeypatch):
    clear_settings_env(monkeypatch)
    config = make_config(entra=CLAIMS)
    addon = Management(config)
    tctx, settings_addon = settings_context(config, addon)
    with tctx:
        tctx.configure(settings_addon, simulator_api_key=API_KEY, simulator_entra_tokens="claims")
        start(settings_addon)
        addon.running()
        yield config, addon


def post_token(addon, body=None, headers=None, key=API_KEY):
    flow = make_flow("POST", "/++/token", body, key=key, headers=headers)
    addon.request(flow)
    return flow.response


def test_the_token_endpoint_mints_what_claims_mode_accepts(management):
    config, addon = management
    answer = json_of(post_token(addon, {"oid": "o-1", "tid": "t-1", "expiresIn": 600}))
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 600
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["oid"] == "o-1" and claims["tid"] == "t-1" and claims["aud"] == entra.AZURE_AUDIENCES[0]
    assert entra.judge(answer["access_token"], config.entra).accepted
    expired = json_of(post_token(addon, {"expiresIn": -3600}))["access_token"]
    assert entra.judge(expired, config.entra).reason == "the token has expired"


def test_the_token_endpoint_wants_the_key_and_sane_bodies(management):
    config, addon = management
    minted = json_of(post_token(addon))["access_token"]
    assert post_token(addon, key=None, headers={"Authorization": f"Bearer {minted}"}).status_code == 401
    assert (
        json_of(post_token(addon, {"expiresIn": "soon"}))["error"]["message"]
        == "expiresIn: expected a whole number of seconds (negative for an expired token)"
    )
    assert post_token(addon, {"color": "blue"}).status_code == 400
    config.entra = entra.TokenPolicy(mode="off")
    assert "SIMULATOR_ENTRA_TOKENS is off" in json_of(post_token(addon))["error"]["message"]


def test_the_config_view_shows_the_token_policy(management):
    _config, addon = management
    flow = make_flow("GET", "/++/config")
    addon.request(flow)
    assert json_of(flow.response)["entraTokens"]["mode"] == "claims"


def test_the_simulator_config_defaults_to_off():
    assert SimulatorConfig().entra.mode == "off"


# Token bodies: every field checked, a 400 naming it, never a 500.


@pytest.mark.parametrize(
    "body, field",
    [
        ({"expiresIn": 1e300}, "expiresIn"),
        ({"expiresIn": -(10**12)}, "expiresIn"),
        ({"expiresIn": 2**63}, "expiresIn"),
        ({"expiresIn": 1.5}, "expiresIn"),
        ({"expiresIn": "3600"}, "expiresIn"),
        ({"expiresIn": None}, "expiresIn"),
        ({"expiresIn": True}, "expiresIn"),
        ({"oid": ["o"]}, "oid"),
        ({"tid": {"t": 1}}, "tid"),
        ({"appid": 7}, "appid"),
        ({"aud": ""}, "aud"),
        ({"aud": "x" * 2000}, "aud"),
        ({"claims": []}, "claims"),
        ({"claims": {"exp": "never"}}, "claims.exp"),
        ({"claims": {"exp": 1e300}}, "claims.exp"),
        ({"claims": {"exp": -1}}, "claims.exp"),
        ({"claims": {"exp": 2**63}}, "claims.exp"),
        ({"claims": {"nbf": [1]}}, "claims.nbf"),
        ({"claims": {"iat": {"at": 1}}}, "claims.iat"),
        ({"claims": {"aud": []}}, "claims.aud"),
        ({"claims": {"aud": ["ok", 5]}}, "claims.aud"),
        ({"claims": {"tid": ["a", "b"]}}, "claims.tid"),
        ({"claims": {"oid": None}}, "claims.oid"),
        ({"claims": {"sub": 12}}, "claims.sub"),
        ({"claims": {"iss": {}}}, "claims.iss"),
        ({"claims": {"roles": ["x" * 20_000]}}, "claims"),
        ({"claims": {"deep": json.loads("[" * 300 + "]" * 300)}}, "claims"),
        ([], "body"),
        ("token", "body"),
    ],
)
def test_every_token_field_is_checked(management, body, field):
    _, addon = management
    response = post_token(addon, body)
    assert response.status_code == 400
    error = json_of(response)["error"]
    assert error["code"] == "BadRequest" and error["message"].startswith(field + ":"), error


def test_a_token_body_that_is_not_json_is_a_400(management):
    _, addon = management
    flow = make_flow("POST", "/++/token", raw=b"{never")
    addon.request(flow)
    assert flow.response.status_code == 400


def test_token_claims_in_range_are_minted_as_asked(management):
    config, addon = management
    answer = json_of(
        post_token(
            addon,
            {
                "expiresIn": 366 * 86400,
                "claims": {"aud": ["https://ai.azure.com", "other"], "roles": ["reader"], "iat": 1_700_000_000},
            },
        )
    )
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["aud"] == ["https://ai.azure.com", "other"] and claims["roles"] == ["reader"]
    assert answer["expires_in"] == claims["exp"] - 1_700_000_000
    assert entra.judge(answer["access_token"], config.entra).accepted


# Claims of unexpected types or sizes: Azure's 401, never a 500.


def raw_token(claims: dict, header: dict | None = None) -> str:
    """A JWT whose parts are written as given (PyJWT would refuse to write some of these)."""

    def part(value) -> str:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


ODD_VALUES = [["a", "b"], {"a": 1}, 12, 1.5, True, None, "x" * 5000, [[["deep"]]]]
TENANTS = entra.TokenPolicy(
    mode="claims", tenants=frozenset({entra.DEFAULT_TENANT}), principals=frozenset({entra.DEFAULT_OID})
)


@pytest.mark.parametrize("claim", ["aud", "exp", "nbf", "tid", "oid", "appid", "azp", "sub", "iss"])
@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda v: type(v).__name__ + str(len(str(v))))
@pytest.mark.parametrize("policy", [CLAIMS, TENANTS], ids=["any-tenant", "tenants-set"])
def test_an_odd_claim_is_azures_401(claim, value, policy):
    claims = entra.token_claims()
    claims[claim] = value
    response = run_auth(bearer_flow(raw_token(claims)), policy)
    if response is None:
        # Only what a real token may hold passes: a missing optional claim (null is absent), or
        # a "not before" that is a number in the past.
        assert (value is None and claim in ("tid", "oid", "appid", "azp", "sub", "iss", "nbf")) or (
            claim == "nbf" and isinstance(value, (int, float))
        ), (claim, value)
        return
    assert response.status_code == 401
    assert json_of(response) == INVALID_TOKEN or json_of(response)["error"]["code"] == "PermissionDenied"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"exp": Infinity, "aud": "https://ai.azure.com"}',
        b'{"exp": NaN, "aud": "https://ai.azure.com"}',
        b'{"exp": 1' + b"0" * 5000 + b', "aud": "https://ai.azure.com"}',
        b'{"aud": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"[1, 2]",
        b"\xff\xfe",
    ],
)
@pytest.mark.parametrize("policy", [CLAIMS, TENANTS], ids=["any-tenant", "tenants-set"])
def test_unreadable_payloads_are_azures_401(payload, policy):
    assert json_of(run_auth(bearer_flow(raw_token(payload)), policy)) == INVALID_TOKEN


@pytest.mark.parametrize(
    "header",
    [{"alg": ["RS256"]}, {"alg": "RS256", "kid": {"k": 1}}, {"alg": None}, {"alg": "RS256", "kid": "x" * 5000}],
)
def test_odd_headers_in_signature_mode_are_azures_401(signer, header):
    _, policy, _ = signer
    assert json_of(run_auth(bearer_flow(raw_token(entra.token_claims(), header)), policy)) == INVALID_TOKEN


def test_odd_claim_names_the_claim():
    claims = entra.token_claims()
    claims["tid"] = ["a"]
    verdict = entra.judge(raw_token(claims), TENANTS)
    assert not verdict.accepted and "'tid'" in verdict.reason
