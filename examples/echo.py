"""Echo: serve a path of your own. `POST /echo` answers with the body it was sent.

EXTENSION_PATH=examples/echo.py make run
curl localhost:8000/echo -H "api-key: my-key" -d hello   ->   Echo: hello  (SIMULATOR_API_KEY=my-key)
"""

from mitmproxy import http


def echo(context):
    request = context.request
    if request.method != "POST" or request.path.partition("?")[0] != "/echo":
        return None  # not ours: the next generator gets it
    return http.Response.make(200, b"Echo: " + (request.content or b""), {"content-type": "text/plain"})


def initialize(config):
    config.generators.append(echo)
