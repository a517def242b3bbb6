"""Extensions loaded through EXTENSION_PATH into the in-process stack: a path of their own,
a bearer-token check, and a generator that fails. (The SDK, streams and start-up mistakes:
tests/e2e/test_e2e_extensions.py.)"""

from __future__ import annotations

from conftest import API_VERSION, ROOT

EXAMPLES = ROOT / "examples"
MESSAGES = [{"role": "user", "content": "What is the weather like?"}]
CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"


def test_echo_serves_a_path_of_its_own(stack_factory):
    sim = stack_factory({"EXTENSION_PATH": str(EXAMPLES / "echo.py"), "SIMULATOR_LATENCY": "false"})
    r = sim.post("/echo", content=b"hello")
    assert (r.status_code, r.text) == (200, "Echo: hello")
    assert sim.post("/other").status_code == 404
    assert sim.post("/echo", content=b"x", key=None).status_code == 401  # auth runs first
    # The built-in generators still answer.
    r = sim.post(CHAT, json={"messages": MESSAGES, "max_tokens": 3})
    assert r.status_code == 200 and r.json()["choices"]


def test_bearer_token_extension(stack_factory):
    sim = stack_factory(
        {
            "EXTENSION_PATH": str(EXAMPLES / "bearer_token.py"),
            "EXAMPLE_BEARER_TOKEN": "entra-like-token",
            "SIMULATOR_LATENCY": "false",
        }
    )
    body = {"messages": MESSAGES, "max_tokens": 3}
    ok = sim.post(CHAT, json=body, headers={"authorization": "Bearer entra-like-token"}, key=None)
    assert ok.status_code == 200
    bad = sim.post(CHAT, json=body, headers={"authorization": "Bearer other"}, key=None)
    assert bad.status_code == 401


def test_a_failing_generator_gives_a_500_naming_the_extension(stack_factory, tmp_path, caplog):
    ext = tmp_path / "broken.py"
    ext.write_text(
        "def explode(context):\n    raise RuntimeError('boom')\n\n"
        "def initialize(config):\n    config.generators.insert(0, explode)\n"
    )
    sim = stack_factory({"EXTENSION_PATH": str(ext), "SIMULATOR_LATENCY": "false"})
    r = sim.post(CHAT, json={"messages": MESSAGES})
    assert r.status_code == 500
    assert "broken.py" in r.json()["error"]["message"] and "boom" in r.json()["error"]["message"]
    assert "Traceback" in caplog.text
    assert sim.get("/++/health", key=None).status_code == 200
