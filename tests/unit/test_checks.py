"""The routing and checks stages together: what a request's context holds, and the errors
Azure gives before it runs a model."""

import datetime

import pytest
from mitmproxy import http
from mitmproxy.test import taddons
from unit_support import chat_path, json_of, make_config, make_flow

from aoai.runtime.bounds import Bounds
from aoai.runtime.state import context_of
from aoai.stages import checks
from aoai.stages.checks import Checks
from aoai.stages.routing import Routing

HELLO = {
    "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]
}


def route(flow, config=None):
    routing, checking = Routing(config or make_config()), Checks()
    with taddons.context(routing, checking):
        routing.request(flow)
        checking.request(flow)
    return flow


def post(path, body=None, **kw):
    return route(make_flow("POST", path, body, **{k: v for k, v in kw.items() if k != "config"}), kw.get("config"))


# --- version_supported


def _in_days(days):
    return (datetime.date.today() + datetime.timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    "version, v1, supported",
    [
        ("2024-10-21", False, True),
        ("2022-12-01", False, True),
        ("2022-11-30", False, False),
        ("2024-02-15-preview", False, True),
        ("2025-04-01-preview", True, True),
        ("2024-02-30", False, False),
        ("2024-10-21-beta", False, False),
        ("20241021", False, False),
        ("v1", True, True),
        ("preview", True, True),
        ("latest", True, True),
        ("v1", False, False),
        ("banana", True, False),
    ],
)
def test_version_supported(version, v1, supported):
    assert checks.version_supported(version, v1) is supported


def test_versions_far_in_the_future_are_not_supported():
    assert checks.version_supported(_in_days(10), False) is True
    assert checks.version_supported(_in_days(40), False) is False


# --- the addon: context


def test_a_chat_request_gets_its_context():
    flow = post(chat_path(), HELLO)
    assert flow.response is None
    context = context_of(flow)
    assert context.route.operation == "chat" and context.operation.name == "chat"
    assert context.deployment.name == "gpt-4o" and context.deployment.defined
    assert context.api_version == "2024-10-21"
    assert context.body == HELLO
    assert context.prompt_tokens == 19
    assert context.values == {
        "deployment": "gpt-4o",
        "model": "gpt-4o",
        "operation": "chat",
        "api_version": "2024-10-21",
        "prompt_tokens": 19,
        "cached_tokens": 0,
        "completion_tokens": 0,
        "estimated_tokens": 0,
        "latency_s": 0.0,
    }
    assert context.request is flow.request


def test_prompt_tokens_use_the_models_encoding():
    # gpt-35-turbo counts with cl100k_base: the reference prompt is 19 there too.
    flow = post(chat_path("gpt-35-turbo"), HELLO)
    assert context_of(flow).deployment.model.encoding == "cl100k_base"
    assert context_of(flow).values["prompt_tokens"] == 19


def test_completions_and_embeddings_count_their_prompt():
    flow = post(
        "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21",
        {"prompt": ["Hello!", "Hello!"], "max_tokens": 1},
    )
    assert context_of(flow).route.operation == "completions"
    assert context_of(flow).values["prompt_tokens"] == 2 + 2
    flow = post(
        "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21",
        {"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 1},
    )
    assert context_of(flow).values["prompt_tokens"] == 5
    flow = post(
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21", {"input": ["Hello!", "Hello!"]}
    )
    assert context_of(flow).route.operation == "embeddings"
    assert context_of(flow).values["prompt_tokens"] == 4


def test_v1_paths_take_the_deployment_from_the_body_and_need_no_version():
    flow = post("/openai/v1/chat/completions", {**HELLO, "model": "gpt-4o-mini"})
    assert flow.response is None
    assert context_of(flow).deployment.name == "gpt-4o-mini"
    assert context_of(flow).api_version is None


def test_v1_without_model():
    flow = post("/openai/v1/chat/completions", HELLO)
    assert flow.response.status_code == 400
    assert json_of(flow.response)["error"] == {
        "message": "Missing required parameter: 'model'.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "missing_required_parameter",
    }


def test_undefined_deployments_get_a_stand_in():
    flow = post(chat_path("my-own-name"), HELLO)
    context = context_of(flow)
    assert (context.deployment.name, context.deployment.model.name, context.deployment.defined) == (
        "my-own-name",
        "gpt-4o",
        False,
    )


def test_paths_it_does_not_know_pass_untouched():
    flow = route(make_flow("GET", "/something/else"))
    assert flow.response is None
    assert context_of(flow).route is None and context_of(flow).params == {}


def test_an_answered_flow_is_left_alone():
    flow = make_flow("GET", chat_path())
    flow.response = http.Response.make(204)
    route(flow)
    assert flow.response.status_code == 204 and context_of(flow).deployment is None


# --- the addon: errors


def test_no_api_version_is_404():
    flow = post(chat_path(version=None), HELLO)
    assert flow.response.status_code == 404
    assert json_of(flow.response) == {"error": {"code": "404", "message": "Resource not found"}}


@pytest.mark.parametrize("version", ["2021-01-01", "banana", "v1"])
def test_a_bad_api_version_is_400(version):
    flow = post(chat_path(version=version), HELLO)
    assert flow.response.status_code == 400
    assert json_of(flow.response) == {"error": {"code": "BadRequest", "message": "API version not supported"}}


def test_a_bad_version_on_v1_is_400():
    flow = post("/openai/v1/chat/completions?api-version=1999-01-01", {**HELLO, "model": "gpt-4o"})
    assert json_of(flow.response)["error"]["code"] == "BadRequest"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(method):
    flow = route(make_flow(method, chat_path()))
    assert flow.response.status_code == 405
    assert flow.response.headers["allow"] == "POST"
    assert json_of(flow.response)["error"]["code"] == "405"


def test_a_body_over_the_limit_is_413():
    flow = post(chat_path(), HELLO, config=make_config(bounds=Bounds(max_body_bytes=50)))
    assert flow.response.status_code == 413
    assert json_of(flow.response)["error"]["code"] == "RequestEntityTooLarge"
    assert "50 bytes" in json_of(flow.response)["error"]["message"]


@pytest.mark.parametrize("raw, detail", [(b"{not json", ""), (b"", "The body was empty.")])
def test_bad_json_is_400(raw, detail):
    flow = route(make_flow("POST", chat_path(), raw=raw))
    assert flow.response.status_code == 400
    error = json_of(flow.response)["error"]
    assert error["message"].startswith("We could not parse the JSON body of your request.")
    assert detail in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_body_that_is_not_an_object_is_400():
    flow = post(chat_path(), [1, 2])
    assert (
        json_of(flow.response)["error"]["message"]
        == "Invalid type for body: expected a JSON object, but got an array instead."
    )


def test_undefined_deployments_are_404_when_not_allowed():
    flow = post(chat_path("nope"), HELLO, config=make_config(allow_undefined_deployments=False))
    assert flow.response.status_code == 404
    assert json_of(flow.response)["error"]["code"] == "DeploymentNotFound"
    assert json_of(flow.response)["error"]["message"].startswith("The API deployment for this resource does not exist.")
    # Defined ones still work.
    assert post(chat_path("gpt-4o"), HELLO, config=make_config(allow_undefined_deployments=False)).response is None


@pytest.mark.parametrize(
    "path, body, verb, model",
    [
        (
            "/openai/deployments/text-embedding-3-small/chat/completions?api-version=2024-10-21",
            HELLO,
            "chatCompletion",
            "text-embedding-3-small",
        ),
        ("/openai/deployments/gpt-4o/embeddings?api-version=2024-10-21", {"input": "x"}, "embeddings", "gpt-4o"),
        ("/openai/deployments/gpt-4o/completions?api-version=2024-10-21", {"prompt": "x"}, "completion", "gpt-4o"),
    ],
)
def test_operation_not_supported(path, body, verb, model):
    flow = post(path, body)
    assert flow.response.status_code == 400
    error = json_of(flow.response)["error"]
    assert error["code"] == "OperationNotSupported"
    assert error["message"].startswith(f"The {verb} operation does not work with the specified model, {model}.")


@pytest.mark.parametrize(
    "path, body, param, code",
    [
        (chat_path(), {"messages": []}, "messages", "empty_array"),
        (chat_path(), {**HELLO, "n": 0}, "n", "integer_out_of_range"),
        (chat_path(), {**HELLO, "stream_options": {"include_usage": True}}, "stream_options", None),
        (
            "/openai/deployments/text-embedding-ada-002/embeddings?api-version=2024-10-21",
            {"input": "x", "dimensions": 10},
            "dimensions",
            "invalid_value",
        ),
        (
            "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21",
            {},
            "prompt",
            "missing_required_parameter",
        ),
    ],
)
def test_validation_errors_carry_param_and_code(path, body, param, code):
    flow = post(path, body)
    assert flow.response.status_code == 400
    error = json_of(flow.response)["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert context_of(flow).deployment is None


def test_context_length_exceeded():
    flow = post(chat_path("gpt-4"), {**HELLO, "max_tokens": 9000})
    assert flow.response.status_code == 400
    error = json_of(flow.response)["error"]
    assert error == {
        "message": "This model's maximum context length is 8192 tokens. However, you requested 9019 tokens "
        "(19 in the messages, 9000 in the completion). Please reduce the length of the messages or "
        "completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


def test_errors_echo_the_client_request_id():
    flow = route(make_flow("POST", chat_path(version=None), HELLO, headers={"x-ms-client-request-id": "abc"}))
    assert flow.response.headers["x-ms-client-request-id"] == "abc"


@pytest.mark.parametrize("value", [list(range(9000)), [list(range(9000))], " hello" * 9000])
def test_embedding_input_over_the_context_window(value):
    flow = post("/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21", {"input": value})
    assert flow.response is not None and flow.response.status_code == 400
    error = json_of(flow.response)["error"]
    assert (error["param"], error["code"]) == ("input", "context_length_exceeded")
    assert error["message"].startswith("This model's maximum context length is 8191 tokens, however you requested 9000")


def test_many_embedding_inputs_may_add_up_past_the_window():
    flow = post(
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21",
        {"input": [list(range(5000)), list(range(5000))]},
    )
    assert flow.response is None
    assert context_of(flow).values["prompt_tokens"] == 10000


def test_a_limit_above_what_the_model_writes_is_refused_once_the_request_fits():
    flow = post(chat_path(), {**HELLO, "max_tokens": 20000})  # fits gpt-4o's window, over its 16,384
    assert json_of(flow.response)["error"] == {
        "message": "max_tokens is too large: 20000. This model supports at most 16384 completion tokens, whereas "
        "you provided 20000.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "invalid_value",
    }
    # Over the window too: the window is what Azure names first.
    flow = post(chat_path(), {**HELLO, "max_completion_tokens": 128000})
    assert json_of(flow.response)["error"]["code"] == "context_length_exceeded"
    assert post(chat_path(), {**HELLO, "max_tokens": 16384}).response is None


def test_more_than_128_tools_are_refused():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    tools = [{**tool, "function": {**tool["function"], "name": f"f{i}"}} for i in range(129)]
    error = json_of(post(chat_path(), {**HELLO, "tools": tools}).response)["error"]
    assert (error["param"], error["code"]) == ("tools", "array_above_max_length")
    assert error["message"] == (
        "Invalid 'tools': array too long. Expected an array with maximum length 128, but "
        "got an array with length 129 instead."
    )
    assert post(chat_path(), {**HELLO, "tools": tools[:128]}).response is None


def test_a_body_nested_too_deep_is_a_400():
    deep = {
        "messages": [{"role": "user", "content": "Hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    }
    node = deep["response_format"]["json_schema"]["schema"]
    for _ in range(200):  # JSON answers echo such parts; their encoder stops at 255 levels
        node["items"] = {}
        node = node["items"]
    flow = post(chat_path(), deep)
    assert flow.response.status_code == 400
    assert "nested more than 128 levels" in json_of(flow.response)["error"]["message"]


def test_nesting_is_measured_only_when_the_brackets_could_reach_the_limit():
    from aoai.openai import validation

    class Untouchable(dict):
        def values(self):
            raise AssertionError("an ordinary body was walked")

    assert not validation.nested_too_deep(b'{"a": [1, {"b": 2}]}', Untouchable(), limit=3)
    assert not validation.nested_too_deep(b"[[[]]]", [[[]]], limit=3)
    assert validation.nested_too_deep(b"[[[[]]]]", [[[[]]]], limit=3)
