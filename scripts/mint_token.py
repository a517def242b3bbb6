"""Print an Entra ID-shaped access token the simulator accepts, without Entra or a running simulator.

    python scripts/mint_token.py                      # claims mode (SIMULATOR_ENTRA_TOKENS=claims)
    python scripts/mint_token.py --oid 1111… --tid 2222… --expires-in -60   # an expired one

Signature mode (SIMULATOR_ENTRA_TOKENS=signature): make a key and its JWKS once, then sign with it:

    python scripts/mint_token.py --new-key key.pem --jwks jwks.json   # writes both, prints a token
    SIMULATOR_ENTRA_JWKS=jwks.json …                                  # the simulator trusts the key
    python scripts/mint_token.py --key key.pem                        # more tokens

The private key stays with whoever mints; the simulator only ever gets the JWKS's public key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addons"))

try:
    from aoai.runtime import entra
except ModuleNotFoundError as missing:  # a python without the simulator's packages
    from project_python import rerun_in_venv

    rerun_in_venv(missing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oid", default=entra.DEFAULT_OID, help="object id of the principal (oid)")
    parser.add_argument("--tid", default=entra.DEFAULT_TENANT, help="tenant id (tid)")
    parser.add_argument("--appid", help="application id of a service principal (appid)")
    parser.add_argument("--aud", default=entra.AZURE_AUDIENCES[0], help="audience (aud)")
    parser.add_argument(
        "--expires-in",
        type=int,
        default=entra.DEFAULT_LIFETIME_S,
        help="seconds until it expires; negative for an expired token",
    )
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key", type=Path, help="PEM private key (RSA or EC) to sign with, for signature mode")
    keys.add_argument("--new-key", type=Path, help="make a new RSA key here (PEM) and sign with it")
    parser.add_argument("--jwks", type=Path, help="write the JWKS of the signing key here")
    args = parser.parse_args(argv)

    private_key = None
    if args.new_key:
        pem = entra.new_private_key_pem()
        fd = os.open(args.new_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        private_key = entra.load_private_key(pem)
    elif args.key:
        try:
            private_key = entra.load_private_key(args.key.read_bytes())
        except (OSError, ValueError, TypeError) as e:
            parser.error(f"--key {args.key}: not an unencrypted PEM private key ({e})")
    if args.jwks:
        if private_key is None:
            parser.error("--jwks needs --key or --new-key: the JWKS is of the key that signs")
        args.jwks.write_text(json.dumps(entra.jwks_of(private_key), indent=2) + "\n")
    claims = entra.token_claims(
        audience=args.aud, tenant=args.tid, oid=args.oid, appid=args.appid, lifetime_s=args.expires_in
    )
    print(entra.mint(claims, private_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
