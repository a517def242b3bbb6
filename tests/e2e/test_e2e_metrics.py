"""GET /++/metrics: Prometheus text that parses, and values that move as requests are served."""

from __future__ import annotations

import json

import httpx
from conftest import API_VERSION
from helpers import scrape, value
from openai import AzureOpenAI


def test_metrics_move_as_requests_are_served(simulator_factory, tmp_path):
    deployments = tmp_path / "deployments.json"
    deployments.write_text(
        json.dumps(
            {
                "chat": {
                    "model": "gpt-4o",
                    "latency": {
                        "timeToFirstTokenMs": {"mean": 100, "stdDev": 0},
                        "interTokenMs": {"mean": 10, "stdDev": 0},
                    },
                }
            }
        )
    )
    sim = simulator_factory({"OPENAI_DEPLOYMENT_CONFIG_PATH": str(deployments)})
    before = scrape(sim)
    assert value(before, "aoai_requests_total") == 0

    c = AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)
    messages = [{"role": "user", "content": "Hello!"}]
    r = c.chat.completions.create(model="chat", messages=messages, max_tokens=5)
    list(c.chat.completions.create(model="chat", messages=messages, max_tokens=8, stream=True))
    c.embeddings.create(model="text-embedding-3-small", input="hi")
    httpx.post(
        f"{sim.url}/openai/deployments/chat/chat/completions?api-version={API_VERSION}",
        json={"messages": messages},
        headers={"api-key": "wrong"},
    )

    after = scrape(sim)
    assert value(after, "aoai_requests_total", deployment="chat", operation="chat", status="200") == 2
    assert value(after, "aoai_requests_total", operation="embeddings", status="200") == 1
    assert value(after, "aoai_requests_total", status="401") == 1
    assert value(after, "aoai_prompt_tokens_total", deployment="chat") == 2 * r.usage.prompt_tokens
    assert value(after, "aoai_completion_tokens_total", deployment="chat") == 5 + 8
    # One stream: its time to first token (100 ms) and its 7 gaps of about 10 ms, as sent.
    assert value(after, "aoai_time_to_first_token_seconds_count", deployment="chat") == 1
    assert 0.09 < value(after, "aoai_time_to_first_token_seconds_sum", deployment="chat") < 0.5
    assert value(after, "aoai_inter_token_seconds_count", deployment="chat") == 7
    assert 0.05 < value(after, "aoai_inter_token_seconds_sum", deployment="chat") < 0.3
    assert value(after, "aoai_request_duration_seconds_count", deployment="chat") == 2
    assert value(after, "aoai_overhead_seconds_count", deployment="chat") == 2
    # The event loop's lag is watched all along, a timer every 0.1 s.
    assert value(after, "aoai_event_loop_lag_seconds_count") >= 1
    # The simulator's own share of a request is small next to the simulated waits.
    assert value(after, "aoai_overhead_seconds_sum", deployment="chat") < 0.2


def test_otlp_export_when_an_endpoint_is_set(simulator_factory):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append((self.path, self.headers.get("content-type", ""), body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sim = None
    try:
        sim = simulator_factory(
            {
                "SIMULATOR_LATENCY": "false",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
                "OTEL_METRIC_EXPORT_INTERVAL": "300",
            }
        )
        AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}], max_tokens=3
        )
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(b"aoai_requests" in body for _, _, body in received):
            time.sleep(0.1)
    finally:
        if sim is not None:
            sim.stop()  # before the collector goes, so the last push is not retried
        server.shutdown()
    exports = [(path, kind) for path, kind, body in received if b"aoai_requests" in body]
    assert exports and exports[0] == ("/v1/metrics", "application/x-protobuf")
    assert any(b"aoai_completion_tokens" in body and b"gpt-4o" in body for _, _, body in received)
