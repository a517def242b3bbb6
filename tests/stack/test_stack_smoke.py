"""The in-process stack (tests/inprocess.py) answers as the simulator does, through every hook."""

import inprocess
import pytest
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


HOOKS_SEEN = """
seen = {}


def requestheaders(flow):
    seen[flow.id] = ["requestheaders"]


def request(flow):
    seen[flow.id].append("request")


def responseheaders(flow):
    seen[flow.id].append("responseheaders")


def response(flow):
    seen[flow.id].append("response")
    flow.response.headers["x-hooks"] = ",".join(seen.pop(flow.id))
"""


def test_every_hook_runs_once_in_the_proxys_order(stack_factory, tmp_path):
    extension = tmp_path / "hooks_seen.py"
    extension.write_text(HOOKS_SEEN)
    stack = stack_factory({"EXTENSION_PATH": str(extension)})
    for sent in ({"max_tokens": 2}, {"max_tokens": 2, "stream": True}):
        r = stack.post(CHAT, json={"messages": [{"role": "user", "content": "Hello!"}], **sent})
        assert r.status_code == 200, r.text
        assert r.headers["x-hooks"] == "requestheaders,request,responseheaders,response"
    # A request a stage refuses from its head passes the same hooks.
    r = stack.post(CHAT, json={"messages": []}, key=None)
    assert r.status_code == 401 and r.headers["x-hooks"] == "requestheaders,request,responseheaders,response"


def test_a_bad_setting_stops_the_stack_with_the_simulators_line(stack_factory):
    with pytest.raises(inprocess.StartError) as refused:
        stack_factory({"SIMULATOR_MODE": "banana"})
    assert str(refused.value).startswith("Cannot start the simulator: SIMULATOR_MODE:")
