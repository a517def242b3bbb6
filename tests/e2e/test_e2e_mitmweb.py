"""The simulator under mitmweb: flows, paced streams included, show in the web UI's API."""

from __future__ import annotations

import json
import time

import httpx
from conftest import API_VERSION, free_port
from openai import AzureOpenAI

PASSWORD = "web-test-password"


def test_mitmweb_shows_generated_and_streamed_flows(simulator_factory):
    web_port = free_port()
    sim = simulator_factory(
        {"LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN": "5"},
        program="mitmweb",
        args=[
            "--set",
            f"web_port={web_port}",
            "--set",
            "web_host=127.0.0.1",
            "--set",
            "web_open_browser=false",
            "--set",
            f"web_password={PASSWORD}",
        ],
    )
    client = AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION)
    plain = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
        )
        if c.choices
    )

    auth = {"authorization": f"Bearer {PASSWORD}"}
    deadline = time.monotonic() + 10
    chat_flows = []
    while time.monotonic() < deadline and len(chat_flows) < 2:
        flows = httpx.get(f"http://127.0.0.1:{web_port}/flows", headers=auth).json()
        chat_flows = [
            f
            for f in flows
            if f["request"]["path"].startswith("/openai/deployments/gpt-4o/chat/") and f.get("response")
        ]
        time.sleep(0.2)
    assert len(chat_flows) == 2
    assert all(f["response"]["status_code"] == 200 for f in chat_flows)
    bodies = [
        httpx.get(f"http://127.0.0.1:{web_port}/flows/{f['id']}/response/content.data", headers=auth).text
        for f in chat_flows
    ]
    assert any(plain.choices[0].message.content in b for b in bodies)
    # The streamed answer's body is kept too, so the UI shows its frames.
    stream_body = next(b for b in bodies if b.startswith("data: "))
    assert stream_body.endswith("data: [DONE]\n\n")
    frames = [json.loads(line[6:]) for line in stream_body.splitlines() if line.startswith("data: {")]
    assert "".join(c["delta"].get("content") or "" for f in frames for c in f["choices"]) == streamed
