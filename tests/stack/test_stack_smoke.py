"""The in-process stack answers as the simulator does."""

from conftest import API_VERSION

CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"


def test_a_chat_completion(stack):
    r = stack.post(CHAT, json={"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 5


def test_a_stream(stack):
    r = stack.post(CHAT, json={"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith("data: [DONE]")


def test_no_key(stack):
    r = stack.post(CHAT, json={"messages": [{"role": "user", "content": "Hello!"}]}, key=None)
    assert r.status_code == 401
