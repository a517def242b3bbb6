"""Failing closed: a stage or extension hook that raises costs its request an Azure 500,
never a trip upstream."""

import asyncio
import logging

import pytest
from unit_support import chat_path, json_of, make_flow, run

from aoai.runtime.failures import guard


class Broken:
    def request(self, flow):
        raise TypeError("unhashable type: 'dict'")

    def response(self, flow):
        return None


class BrokenLater:
    async def request(self, flow):
        await asyncio.sleep(0)
        raise KeyError("deployment")


class Child:
    def responseheaders(self, flow):
        raise ValueError("child")


class Parent:
    addons = [Child()]  # noqa: RUF012 (as mitmproxy reads nested addons)


def call(hook, flow):
    """Run a hook as mitmproxy does: call it, and await what it returns."""

    async def main():
        pending = hook(flow)
        if pending is not None:
            await pending

    run(main())
    return flow.response


def test_a_raising_hook_answers_azures_500_naming_the_request_id(caplog):
    stage = Broken()
    guard(stage)
    flow = make_flow("POST", chat_path(), {"messages": []}, headers={"x-ms-client-request-id": "client-1"})
    with caplog.at_level(logging.ERROR, logger="aoai"):
        response = call(stage.request, flow)
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    error = json_of(response)["error"]
    request_id = response.headers["apim-request-id"]
    assert error["code"] == "InternalServerError"
    assert request_id in error["message"] and "TypeError in Broken (request hook)" in error["message"]
    assert response.headers["x-request-id"] == request_id
    assert response.headers["x-ms-client-request-id"] == "client-1"
    # The traceback goes to the log, with the request id to find it by.
    record = next(r for r in caplog.records if request_id in r.getMessage())
    assert record.exc_info and record.exc_info[0] is TypeError


def test_an_async_hook_that_raises_later_is_caught_too():
    stage = BrokenLater()
    guard(stage, "extension /x/ext.py")
    response = call(stage.request, make_flow("GET", "/anything"))
    assert response.status_code == 500
    assert "KeyError in extension /x/ext.py (request hook)" in json_of(response)["error"]["message"]


def test_hooks_that_do_not_raise_are_untouched_and_child_addons_are_guarded():
    stage = Broken()
    guard(stage)
    flow = make_flow("GET", "/x")
    assert call(stage.response, flow) is None
    parent = Parent()
    guard(parent, "ext")
    assert call(parent.addons[0].responseheaders, flow).status_code == 500


def test_guarding_twice_wraps_once():
    stage = Broken()
    guard(stage)
    once = stage.request
    guard(stage)
    assert stage.request is once


@pytest.mark.parametrize("hook", ["requestheaders", "request", "responseheaders", "response"])
def test_every_flow_hook_of_the_stages_is_guarded(hook):
    from aoai.runtime.config import SimulatorConfig
    from aoai.runtime.services import Services
    from aoai.stack import build_stages

    config = SimulatorConfig()
    for stage in build_stages(config, Services.build(config)):
        method = getattr(stage, hook, None)
        if callable(method):
            assert getattr(method, "guarded", False), f"{type(stage).__name__}.{hook}"
