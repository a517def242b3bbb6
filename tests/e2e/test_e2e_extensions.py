"""Extensions loaded through EXTENSION_PATH into a real mitmdump: the examples, and mistakes.
(Those whose assertions are about answers only: tests/stack/test_stack_extensions.py.)"""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from conftest import API_VERSION, ROOT
from openai import AzureOpenAI, OpenAI

from aoai.openai import tokens

EXAMPLES = ROOT / "examples"
MESSAGES = [{"role": "user", "content": "What is the weather like?"}]


def client(sim) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)


def chat_url(sim, deployment: str = "gpt-4o") -> str:
    return f"{sim.url}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}"


def test_canned_answers_replace_the_chat_generator(simulator_factory):
    sim = simulator_factory({"EXTENSION_PATH": str(EXAMPLES / "canned_answers"), "SIMULATOR_LATENCY": "false"})
    c = client(sim)
    r = c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    answer = "It is sunny and 22 degrees in Seattle today."
    assert r.choices[0].message.content == answer
    assert r.usage.completion_tokens == tokens.count(answer, tokens.encoding("o200k_base"))
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        if ch.choices
    )
    assert streamed == answer
    cut = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    other = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert other.choices[0].message.content != answer and other.usage.completion_tokens == 5
    # The Responses generator is replaced too: stored, streamed and cut like a generated answer.
    v1 = OpenAI(base_url=sim.url + "/openai/v1/", api_key=sim.key, max_retries=0)
    response = v1.responses.create(model="gpt-4o", input=MESSAGES[-1]["content"])
    assert response.output_text == answer and v1.responses.retrieve(response.id).output_text == answer
    assert response.usage.output_tokens == tokens.count(answer, tokens.encoding("o200k_base"))
    events = list(v1.responses.create(model="gpt-4o", input=MESSAGES, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answer
    assert v1.responses.create(model="gpt-4o", input="hi", max_output_tokens=16).output_text != answer


def test_fault_injector_errors_and_slow_first_byte(simulator_factory):
    sim = simulator_factory(
        {"EXTENSION_PATH": str(EXAMPLES / "fault_injector.py"), "SIMULATOR_LATENCY": "false"},
        args=["--set", "fault_error_share=1", "--set", "fault_retry_after=3"],
    )
    r = httpx.post(chat_url(sim), json={"messages": MESSAGES}, headers={"api-key": sim.key})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "ServiceUnavailable"
    r = httpx.patch(f"{sim.url}/++/config", json={}, headers={"api-key": sim.key})  # management is untouched
    assert r.status_code == 200

    sim = simulator_factory(
        {
            "EXTENSION_PATH": str(EXAMPLES / "fault_injector.py"),
            "SIMULATOR_LATENCY": "false",
            "FAULT_SLOW_FIRST_BYTE_MS": "400",
        }
    )
    started = time.perf_counter()
    client(sim).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
    assert time.perf_counter() - started > 0.4


def test_fault_injector_cuts_streams(simulator_factory):
    sim = simulator_factory(
        {
            "EXTENSION_PATH": str(EXAMPLES / "fault_injector.py"),
            "FAULT_CUT_AFTER_TOKENS": "3",
            "LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN": "5",
        }
    )
    received = []
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for chunk in client(sim).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert len(received) == 3
    # The proxy goes on serving.
    assert client(sim).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2).choices


@pytest.mark.parametrize(
    "source, expected",
    [
        (None, "no such file or folder"),
        ("def initialize(config):\n    return (\n", "SyntaxError"),
        ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
        (
            "def initialize(config):\n    raise ValueError('bad setting')\n",
            "initialize(config) failed: ValueError: bad",
        ),
    ],
)
def test_a_bad_extension_stops_start_up_with_one_line(simulator_factory, tmp_path, source, expected):
    ext = tmp_path / "ext.py"
    if source is not None:
        ext.write_text(source)
    sim = simulator_factory({"EXTENSION_PATH": str(ext)}, wait=False)
    assert sim.process.wait(20) != 0
    log = sim.log()
    lines = [line for line in log.splitlines() if "EXTENSION_PATH" in line]
    assert len(lines) == 1 and str(ext) in lines[0] and expected in lines[0], log
    assert "Traceback" not in log


class _FakeDocumentIntelligence:
    """Azure Document Intelligence on loopback: 202 + Operation-Location, one `running` poll,
    then `succeeded`."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        polls: dict[str, int] = {}
        self.seen: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.seen.append(("POST", self.path, self.headers.get("ocp-apim-subscription-key", "")))
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                location = (
                    f"{base}/documentintelligence/documentModels/prebuilt-read/analyzeResults/r1?api-version=2024-11-30"
                )
                self._reply(202, headers=[("operation-location", location), ("retry-after", "1")])

            def do_GET(self):
                outer.seen.append(("GET", self.path, self.headers.get("ocp-apim-subscription-key", "")))
                polls[self.path] = polls.get(self.path, 0) + 1
                status = "running" if polls[self.path] == 1 else "succeeded"
                body = {"status": status}
                if status == "succeeded":
                    body["analyzeResult"] = {
                        "apiVersion": "2024-11-30",
                        "modelId": "prebuilt-read",
                        "content": "Recorded text",
                        "pages": [],
                    }
                self._reply(200, json.dumps(body).encode(), [("content-type", "application/json")])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _analyze(sim, document: bytes) -> dict:
    headers = {"ocp-apim-subscription-key": sim.key, "content-type": "application/octet-stream"}
    r = httpx.post(
        f"{sim.url}/documentintelligence/documentModels/prebuilt-read:analyze?api-version=2024-11-30",
        content=document,
        headers=headers,
    )
    assert r.status_code == 202, r.text
    location = r.headers["operation-location"]
    assert location.startswith(sim.url)  # the client polls the simulator, not Azure
    for _ in range(10):
        poll = httpx.get(location, headers=headers).json()
        if poll["status"] == "succeeded":
            return poll
        time.sleep(0.05)
    raise AssertionError("never succeeded")


def test_document_intelligence_forwarder_records_and_replays(simulator_factory, tmp_path):
    folder = tmp_path / "rec"
    upstream = _FakeDocumentIntelligence()
    try:
        sim = simulator_factory(
            {
                "SIMULATOR_MODE": "record",
                "RECORDING_DIR": str(folder),
                "EXTENSION_PATH": str(EXAMPLES / "docintel_forwarder.py"),
                "DOC_INTELLIGENCE_ENDPOINT": upstream.url,
                "DOC_INTELLIGENCE_KEY": "di-secret",
            }
        )
        assert _analyze(sim, b"%PDF-1.4 fake")["analyzeResult"]["content"] == "Recorded text"
        sim.stop()
    finally:
        upstream.close()
    assert [s for _, _, s in upstream.seen] == ["di-secret"] * 3  # the client's key was replaced
    text = (folder / "documentintelligence.prebuilt-read.yaml").read_text()
    assert "di-secret" not in text and sim.key not in text
    assert "running" not in text  # polls still running are not worth keeping

    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    assert _analyze(sim, b"%PDF-1.4 fake")["analyzeResult"]["content"] == "Recorded text"
