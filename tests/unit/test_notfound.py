import pytest
from mitmproxy import http
from mitmproxy.test import taddons
from unit_support import json_of, make_config, make_flow

from aoai.runtime.state import context_of
from aoai.runtime.streams import StreamPlan
from aoai.stages.notfound import NotFound


def last_stage(flow, mode="generate"):
    addon = NotFound(make_config(mode=mode))
    with taddons.context(addon):
        addon.request(flow)
    return flow.response


@pytest.mark.parametrize("mode", ["generate", "replay"])
def test_unanswered_requests_get_azures_404(mode):
    response = last_stage(
        make_flow("GET", "/openai/deployments/x/images/generations", headers={"x-ms-client-request-id": "r1"}), mode
    )
    assert response.status_code == 404
    assert json_of(response) == {"error": {"code": "404", "message": "Resource not found"}}
    assert response.headers["x-ms-client-request-id"] == "r1"
    assert response.headers["x-request-id"] == response.headers["apim-request-id"]


def test_record_mode_lets_requests_go_upstream():
    assert last_stage(make_flow("POST", "/openai/deployments/x/images/generations"), "record") is None


def test_answered_flows_and_paced_streams_are_left_alone():
    answered = make_flow("GET", "/x")
    answered.response = http.Response.make(200, b"ok")
    assert last_stage(answered).content == b"ok"
    streamed = make_flow("POST", "/x")
    context_of(streamed).stream = StreamPlan({}, [])
    assert last_stage(streamed) is None
