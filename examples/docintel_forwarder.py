"""Document Intelligence forwarder: record Azure AI Document Intelligence traffic.

In record mode the simulator forwards what it has no recording for. This forwarder sends
Document Intelligence requests to DOC_INTELLIGENCE_ENDPOINT with DOC_INTELLIGENCE_KEY, points
the `Operation-Location` it gets back at the simulator (so the client polls through it), and
records only the answers worth replaying: polls that are still running are not kept.

    SIMULATOR_MODE=record DOC_INTELLIGENCE_ENDPOINT=https://myres.cognitiveservices.azure.com \
    DOC_INTELLIGENCE_KEY=... EXTENSION_PATH=examples/docintel_forwarder.py make run
"""

import json
import os

import httpx
from mitmproxy import http

ENDPOINT = os.environ.get("DOC_INTELLIGENCE_ENDPOINT", "").rstrip("/")
KEY = os.environ.get("DOC_INTELLIGENCE_KEY", "")
PREFIXES = ("/formrecognizer/", "/documentintelligence/")
_PASSED_HEADERS = ("content-type", "operation-location", "retry-after", "apim-request-id", "x-ms-region")


async def forward_document_intelligence(context):
    request = context.request
    if not ENDPOINT or not request.path.startswith(PREFIXES):
        return None
    headers = {"ocp-apim-subscription-key": KEY}
    if request.headers.get("content-type"):
        headers["content-type"] = request.headers["content-type"]
    async with httpx.AsyncClient(timeout=60) as client:
        upstream = await client.request(
            request.method, ENDPOINT + request.path, content=request.raw_content, headers=headers
        )
    response = http.Response.make(
        upstream.status_code,
        upstream.content,
        {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS},
    )
    location = upstream.headers.get("operation-location")
    if location and location.startswith(ENDPOINT):
        scheme = "https" if context.flow.client_conn.tls_established else "http"
        response.headers["operation-location"] = f"{scheme}://{request.host_header}{location[len(ENDPOINT) :]}"
    return {"response": response, "persist": not _still_running(request.method, upstream.content)}


def _still_running(method: str, body: bytes) -> bool:
    if method != "GET":
        return False
    try:
        return json.loads(body).get("status") in ("notStarted", "running")
    except (ValueError, AttributeError):
        return False


def initialize(config):
    config.recording.forwarders.append(forward_document_intelligence)
