"""Bearer token: accept `Authorization: Bearer <token>` as well as the simulator's key, as an
application using Entra ID tokens would send. The token comes from EXAMPLE_BEARER_TOKEN.

    EXAMPLE_BEARER_TOKEN=my-token EXTENSION_PATH=examples/bearer_token.py make run
"""

import os


def initialize(config):
    config.auth_bearer_token(os.environ.get("EXAMPLE_BEARER_TOKEN", "example-bearer-token"))
