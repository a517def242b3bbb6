"""What goes wrong, end to end: authentication, Azure's error answers, the management API and
start-up mistakes, against real mitmdump processes.

The module's simulator answers only the deployments it defines (as Azure does), so unknown
names get a 404; after every bad request a good one must still be answered.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import API_VERSION, Simulator, start_simulator
from helpers import (
    HELLO,
    HELLO_PROMPT_TOKENS,
    assert_azure_error,
    assert_still_serving,
    azure,
    count,
    deployment_url,
    post,
)

CHAT_BODY = {"messages": HELLO, "max_tokens": 3}


@pytest.fixture(scope="module")
def strict(tmp_path_factory) -> Iterator[Simulator]:
    sim = start_simulator(
        tmp_path_factory.mktemp("strict"), {"SIMULATOR_LATENCY": "false", "ALLOW_UNDEFINED_OPENAI_DEPLOYMENTS": "false"}
    )
    yield sim
    sim.stop()


# --- authentication -----------------------------------------------------------------------


def test_missing_key_is_401(strict):
    r = httpx.post(deployment_url(strict, "gpt-4o"), json=CHAT_BODY)
    error = assert_azure_error(r, 401, "401")
    assert "missing subscription key" in error["message"]
    assert_still_serving(strict)


def test_wrong_api_key_is_401_and_the_sdk_raises_authentication_error(strict):
    client = openai.AzureOpenAI(
        azure_endpoint=strict.url, api_key="not-the-key", api_version=API_VERSION, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert raised.value.status_code == 401
    assert "invalid subscription key" in raised.value.message
    assert_still_serving(strict)


def test_a_right_api_key_wins_over_a_wrong_bearer(strict):
    r = post(strict, "gpt-4o", CHAT_BODY, headers={"authorization": "Bearer something-else"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda key: {"Ocp-Apim-Subscription-Key": key}, id="ocp-apim-subscription-key"),
        pytest.param(lambda key: {"Authorization": f"Bearer {key}"}, id="bearer"),
    ],
)
def test_other_ways_to_send_the_key(strict, headers):
    url = deployment_url(strict, "gpt-4o")
    r = httpx.post(url, json=CHAT_BODY, headers=headers(strict.key))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    wrong = httpx.post(url, json=CHAT_BODY, headers=headers("wrong-key"))
    assert wrong.status_code == 401


def test_health_is_open_and_config_needs_the_key(strict):
    health = httpx.get(strict.url + "/++/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    assert_azure_error(httpx.get(strict.url + "/++/config"), 401, "401")
    assert httpx.get(strict.url + "/++/config", headers={"api-key": "wrong"}).status_code == 401
    config = httpx.get(strict.url + "/++/config", headers={"api-key": strict.key})
    assert config.status_code == 200
    assert config.json()["allowUndefinedDeployments"] is False


# --- Azure's errors -----------------------------------------------------------------------


def test_unknown_deployment_is_404_deployment_not_found(strict):
    r = post(strict, "no-such-deployment", CHAT_BODY)
    assert_azure_error(r, 404, "DeploymentNotFound", "The API deployment for this resource does not exist.")
    with pytest.raises(openai.NotFoundError) as raised:
        azure(strict).chat.completions.create(model="no-such-deployment", messages=HELLO)
    assert raised.value.code == "DeploymentNotFound"
    assert_still_serving(strict)


def test_embeddings_on_a_chat_deployment_is_operation_not_supported(strict):
    with pytest.raises(openai.BadRequestError) as raised:
        azure(strict).embeddings.create(model="gpt-4o", input="hello")
    assert raised.value.code == "OperationNotSupported"
    assert "gpt-4o" in raised.value.message
    assert_still_serving(strict)


def test_invalid_json_body(strict):
    r = post(strict, "gpt-4o", content=b'{"messages": [')
    error = assert_azure_error(r, 400, message_start="We could not parse the JSON body of your request.")
    assert error["type"] == "invalid_request_error"
    assert_still_serving(strict)


@pytest.mark.parametrize(
    "operation, body, param, code",
    [
        ("chat/completions", {"messages": "Hello!"}, "messages", "invalid_type"),
        ("chat/completions", {"max_tokens": 5}, "messages", "missing_required_parameter"),
        ("chat/completions", {"messages": [{"role": "user", "content": 42}]}, "messages[0].content", "invalid_type"),
        ("chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
        ("chat/completions", {"messages": HELLO, "n": 0}, "n", "integer_out_of_range"),
        ("chat/completions", {"messages": HELLO, "temperature": 3}, "temperature", "decimal_out_of_range"),
        ("chat/completions", {"messages": HELLO, "tool_choice": "required"}, "tool_choice", None),
        ("embeddings", {"input": ""}, "input", "invalid_value"),
        ("embeddings", {"input": []}, "input", "invalid_value"),
        ("embeddings", {}, "input", "missing_required_parameter"),
    ],
)
def test_invalid_bodies_are_400_naming_the_parameter(strict, operation, body, param, code):
    deployment = "gpt-4o" if operation == "chat/completions" else "text-embedding-3-small"
    r = post(strict, deployment, body, operation)
    error = assert_azure_error(r, 400, code)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert_still_serving(strict)


def test_sdk_raises_bad_request_with_azure_code(strict):
    with pytest.raises(openai.BadRequestError) as raised:
        azure(strict).chat.completions.create(model="gpt-4o", messages=HELLO, n=0)
    assert (raised.value.code, raised.value.param) == ("integer_out_of_range", "n")
    with pytest.raises(openai.BadRequestError) as raised:
        azure(strict).embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    assert raised.value.param == "dimensions"


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/openai/deployments/gpt-4o/chat/complete?api-version=" + API_VERSION),
        ("GET", "/somewhere/else"),
        ("POST", "/openai/deployments/gpt-4o/chat/completions"),  # no api-version
    ],
)
def test_unknown_paths_and_missing_api_version_are_404(strict, method, path):
    r = httpx.request(method, strict.url + path, json=CHAT_BODY, headers={"api-key": strict.key})
    assert_azure_error(r, 404, "404", "Resource not found")
    assert r.json() == {"error": {"code": "404", "message": "Resource not found"}}
    assert_still_serving(strict)


@pytest.mark.parametrize("version", ["2019-01-01", "banana", "2024-13-45"])
def test_unsupported_api_version_is_400(strict, version):
    r = httpx.post(deployment_url(strict, "gpt-4o", version=version), json=CHAT_BODY, headers={"api-key": strict.key})
    assert_azure_error(r, 400, "BadRequest", "API version not supported")
    assert_still_serving(strict)


def test_get_on_chat_path_is_405(strict):
    r = httpx.get(deployment_url(strict, "gpt-4o"), headers={"api-key": strict.key})
    assert_azure_error(r, 405)
    assert_still_serving(strict)


def test_body_over_10_mib_is_413(strict):
    content = json.dumps({"messages": [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]}).encode()
    r = post(strict, "gpt-4o", content=content)
    assert_azure_error(r, 413)
    assert_still_serving(strict)


def test_context_too_long_is_400_context_length_exceeded(strict):
    with pytest.raises(openai.BadRequestError) as raised:
        azure(strict).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=128000)
    assert raised.value.code == "context_length_exceeded"
    message = raised.value.body["message"]
    assert message.startswith("This model's maximum context length is 128000 tokens.")
    assert f"({HELLO_PROMPT_TOKENS} in the messages, 128000 in the completion)" in message
    long_text = "lorem ipsum " * 3000  # far over gpt-35-turbo-instruct's 4 097-token window
    r = post(strict, "gpt-35-turbo-instruct", {"prompt": long_text}, "completions")
    error = assert_azure_error(r, 400, "context_length_exceeded")
    assert error["param"] == "prompt"
    assert_still_serving(strict)


def test_one_embeddings_input_over_the_window_fails_the_batch(strict):
    too_long = "word " * 9000  # over text-embedding-3-small's 8 191 tokens
    r = post(strict, "text-embedding-3-small", {"input": ["short", too_long]}, "embeddings")
    error = assert_azure_error(r, 400, "context_length_exceeded")
    assert f"requested {count(too_long, 'cl100k_base')} tokens" in error["message"] and error["param"] == "input"
    # Many inputs that together pass the window are fine: the limit is per input.
    fine = post(strict, "text-embedding-3-small", {"input": ["word " * 5000] * 2}, "embeddings")
    assert fine.status_code == 200 and len(fine.json()["data"]) == 2
    assert_still_serving(strict)


# --- management ---------------------------------------------------------------------------


def test_patched_deployment_can_be_called_and_removed(strict):
    headers = {"api-key": strict.key}
    assert post(strict, "patched-mini", CHAT_BODY).status_code == 404
    r = httpx.patch(
        strict.url + "/++/config", headers=headers, json={"deployments": {"patched-mini": {"model": "gpt-4o-mini"}}}
    )
    assert r.status_code == 200
    assert r.json()["deployments"]["patched-mini"] == {"model": "gpt-4o-mini"}
    answer = azure(strict).chat.completions.create(model="patched-mini", messages=HELLO, max_tokens=2)
    assert answer.model == "gpt-4o-mini-2024-07-18"
    assert "patched-mini" in httpx.get(strict.url + "/++/config", headers=headers).json()["deployments"]
    removed = httpx.patch(strict.url + "/++/config", headers=headers, json={"deployments": {"patched-mini": None}})
    assert removed.status_code == 200 and "patched-mini" not in removed.json()["deployments"]
    assert post(strict, "patched-mini", CHAT_BODY).status_code == 404


@pytest.mark.parametrize(
    "patch, named",
    [
        ({"colour": "blue"}, "colour"),
        ({"deployments": {"broken": {"model": "gpt-99"}}}, "deployments.broken.model"),
        ({"deployments": {"broken": {"model": "gpt-4o", "speed": 3}}}, "speed"),
        ({"latency": {"enabled": "yes"}}, "latency.enabled"),
    ],
)
def test_bad_patch_is_400_naming_the_field_and_changes_nothing(strict, patch, named):
    headers = {"api-key": strict.key}
    before = httpx.get(strict.url + "/++/config", headers=headers).json()
    r = httpx.patch(strict.url + "/++/config", headers=headers, json=patch)
    error = assert_azure_error(r, 400)
    assert named in error["message"]
    assert httpx.get(strict.url + "/++/config", headers=headers).json() == before
    assert_still_serving(strict)


def test_patch_with_invalid_json_is_400(strict):
    r = httpx.patch(strict.url + "/++/config", headers={"api-key": strict.key}, content=b"{nope")
    assert_azure_error(r, 400)
    assert_still_serving(strict)


def test_get_config_shows_the_settings(strict):
    config = httpx.get(strict.url + "/++/config", headers={"api-key": strict.key}).json()
    assert config["mode"] == "generate"
    assert config["latency"]["enabled"] is False
    assert config["deployments"]["gpt-4o"] == {"model": "gpt-4o"}
    assert config["deployments"]["text-embedding-3-small"] == {"model": "text-embedding-3-small"}


# --- start-up mistakes --------------------------------------------------------------------

STARTUP_CASES = {
    "bad-mode": ({"SIMULATOR_MODE": "bogus"}, "SIMULATOR_MODE"),
    "missing-file": ({"OPENAI_DEPLOYMENT_CONFIG_PATH": "{dir}/missing.json"}, "{dir}/missing.json"),
    "invalid-json": ({"OPENAI_DEPLOYMENT_CONFIG_PATH": "{dir}/invalid.json"}, "{dir}/invalid.json"),
    "unknown-model": ({"OPENAI_DEPLOYMENT_CONFIG_PATH": "{dir}/unknown-model.json"}, "{dir}/unknown-model.json"),
    "negative-latency": ({"LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN": "-1"}, "LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN"),
}


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory) -> Iterator[dict[str, tuple[Simulator, float, str]]]:
    """Every bad start-up launched at once (each costs a process start); name -> (sim, started, named)."""
    folder = tmp_path_factory.mktemp("startup")
    (folder / "invalid.json").write_text('{"my-gpt4o": {"model": "gpt-4o",}')
    (folder / "unknown-model.json").write_text(json.dumps({"my-gpt": {"model": "gpt-99"}}))
    started = {}
    for name, (env, named) in STARTUP_CASES.items():
        env = {k: v.format(dir=folder) for k, v in env.items()}
        started[name] = (start_simulator(folder, env, wait=False), time.monotonic(), named.format(dir=folder))
    yield started
    for sim, _, _ in started.values():
        sim.stop()


@pytest.mark.parametrize("case", list(STARTUP_CASES))
def test_bad_configuration_stops_start_up_with_one_clear_line(failed_starts, case):
    sim, started, named = failed_starts[case]
    try:
        # A simulator that starts runs until stopped; generous, as the starts share the machine.
        code = sim.process.wait(timeout=max(1.0, 40 - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the simulator kept running:\n{sim.log()}")
    assert code != 0
    output = sim.log()
    assert "Traceback" not in output
    naming = [line for line in output.splitlines() if named in line]
    assert len(naming) == 1, output
    assert "Cannot start the simulator" in naming[0]


@pytest.mark.parametrize(
    "env, named",
    [
        ({"OPENAI_DEPLOYMENT_CONFIG_PATH": "{dir}/unknown-model.json"}, "unknown model 'gpt-99'"),
        ({"SIMULATOR_MODE": "bogus"}, "SIMULATOR_MODE"),
        ({"EXTENSION_PATH": "{dir}/missing_extension.py"}, "EXTENSION_PATH"),
    ],
)
def test_a_failed_start_answers_no_client_and_prints_one_line_while_clients_connect(tmp_path, env, named):
    """Health probes and load balancers connect while a simulator starts. mitmproxy has its
    listener up before it loads the simulator, so the kernel may queue such connections; a
    start that fails must end them without a byte of answer (never a 503, never a 200), and
    print its one line with no traceback of the cancelled connections."""
    (tmp_path / "unknown-model.json").write_text(json.dumps({"my-gpt": {"model": "gpt-99"}}))
    sim = start_simulator(tmp_path, {k: v.format(dir=tmp_path) for k, v in env.items()}, wait=False)
    connected, answered = 0, []
    try:
        deadline = time.monotonic() + 40
        while sim.process.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", sim.port), timeout=0.2) as s:
                    connected += 1
                    s.settimeout(10)
                    s.sendall(b"GET /++/health HTTP/1.1\r\nhost: x\r\n\r\n")
                    data = s.recv(1024)
                    if data:
                        answered.append(data)
            except OSError:
                time.sleep(0.002)
        assert sim.process.poll() not in (None, 0)
    finally:
        sim.stop()
    output = sim.log()
    assert answered == [], output
    assert "Traceback" not in output and "CancelledError" not in output
    lines = [line for line in output.splitlines() if line.strip() and "Loading script" not in line]
    assert len(lines) == 1 and lines[0].startswith("Cannot start the simulator: ") and named in lines[0], output


def test_deeply_nested_json_is_refused_at_once(strict):
    content = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    started = time.perf_counter()
    r = post(strict, "gpt-4o", content=content)
    assert_azure_error(r, 400)
    assert "could not parse the JSON body" in r.json()["error"]["message"]
    assert time.perf_counter() - started < 2
    assert_still_serving(strict)
