"""Failing closed, through the whole stack: whatever goes wrong inside the simulator, the client gets an
Azure JSON answer and nothing reaches the upstream (generate and replay never go there; record
mode forwards only requests that passed every check)."""

from __future__ import annotations

import textwrap

import pytest
from fake_azure import UPSTREAM_KEY, FakeAzure
from helpers import HELLO, assert_azure_error, assert_still_serving, post

import aoai.stages.checks

# An extension that makes a built-in stage raise (the checks stage, through the function it
# calls) or raises in its own request hook, as the x-test-raise header asks.
EXTENSION = textwrap.dedent("""
    import aoai.stages.checks as checks

    _check = checks.check


    def check(context, *stores):
        if context.request.headers.get("x-test-raise") == "stage":
            raise RuntimeError("a stage broke")
        return _check(context, *stores)


    def initialize(config):
        checks.check = check


    def request(flow):
        if flow.request.headers.get("x-test-raise") == "extension":
            raise LookupError("an extension hook broke")
""")


@pytest.fixture
def upstream():
    with FakeAzure() as fake:
        yield fake


def start(stack_factory, tmp_path, upstream, mode, monkeypatch):
    # The extension replaces a function of this process's checks module: put it back after.
    monkeypatch.setattr(aoai.stages.checks, "check", aoai.stages.checks.check)
    extension = tmp_path / "raising.py"
    extension.write_text(EXTENSION)
    return stack_factory(
        {
            "SIMULATOR_MODE": mode,
            "AZURE_OPENAI_ENDPOINT": upstream.url,
            "AZURE_OPENAI_KEY": UPSTREAM_KEY,
            "EXTENSION_PATH": str(extension),
            "SIMULATOR_LATENCY": "false",
        }
    )


def send(sim, body=HELLO, raise_in: str | None = None):
    return post(sim, "gpt-4o", body, headers={"x-test-raise": raise_in} if raise_in else None)


@pytest.mark.parametrize("mode", ["generate", "replay", "record"])
@pytest.mark.parametrize(
    "where, name", [("stage", "RuntimeError in Checks (request hook)"), ("extension", "LookupError in extension")]
)
def test_a_raising_stage_or_extension_hook_gets_azures_500_and_never_goes_upstream(
    stack_factory, tmp_path, upstream, mode, where, name, monkeypatch, caplog
):
    sim = start(stack_factory, tmp_path, upstream, mode, monkeypatch)
    response = send(sim, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}, raise_in=where)
    error = assert_azure_error(response, 500, "InternalServerError")
    request_id = response.headers["apim-request-id"]
    assert request_id in error["message"] and name in error["message"]
    assert upstream.connections == 0 and upstream.requests == []
    # The traceback is in the log under that request id; the proxy keeps serving.
    assert request_id in caplog.text and "Traceback" in caplog.text
    if mode == "generate":
        assert_still_serving(sim)


@pytest.mark.parametrize("role", [{}, [1, 2]])
@pytest.mark.parametrize("mode", ["generate", "record"])
def test_a_role_of_the_wrong_type_is_azures_400_naming_the_field(
    stack_factory, tmp_path, upstream, mode, role, monkeypatch
):
    sim = start(stack_factory, tmp_path, upstream, mode, monkeypatch)
    response = send(sim, {"messages": [{"role": role, "content": "hi"}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages[0].role"
    assert upstream.connections == 0


def test_record_mode_forwards_a_request_that_passed_every_check(stack_factory, tmp_path, upstream, monkeypatch):
    sim = start(stack_factory, tmp_path, upstream, "record", monkeypatch)
    assert send(sim, raise_in="stage").status_code == 500
    assert upstream.requests == []
    response = send(sim, {"messages": [{"role": "user", "content": "Hello!"}]})
    assert (
        response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Upstream says: Hello!"
    )
    assert len(upstream.requests) == 1
