"""The start-up banner names a way to get a token that works in the Entra mode in force:
POST /++/token mints only in claims mode (signature mode answers it 409)."""

import pytest
from unit_support import make_config

from aoai.runtime import banner, entra


@pytest.mark.parametrize(
    ("mode", "way"),
    [
        ("claims", "a token for tests: POST /++/token with the API key"),
        ("signature", "a token for tests: scripts/mint_token.py --key KEY.pem (the JWKS's private key)"),
    ],
)
def test_the_banner_names_a_way_to_a_token_that_works(mode, way):
    config = make_config(entra=entra.TokenPolicy(mode=mode))
    lines = [line for line in banner.banner(config, [("127.0.0.1", 9000)]).splitlines() if "Entra ID:" in line]
    assert lines == [f"  Entra ID:    bearer tokens judged by {mode}; {way}"]


def test_without_entra_tokens_the_banner_says_nothing_of_them():
    assert "Entra ID" not in banner.banner(make_config(), [("127.0.0.1", 9000)])
