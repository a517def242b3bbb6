"""Helpers shared by the end-to-end tests: clients pointed at a running simulator, the
model encodings, schemas, and checks of Azure's error bodies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import API_VERSION
from inprocess import Stack
from mitmproxy import http
from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from aoai.openai import tokens

HELLO = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]
HELLO_PROMPT_TOKENS = 19
# A deployment's latency that answers quickly but still paced (deployments files in the tests).
FAST = {"timeToFirstTokenMs": {"mean": 20}, "interTokenMs": {"mean": 10}, "requestMs": {"mean": 10}}


def only(**fault) -> list[dict]:
    """A deployment's faults: this one, on every request."""
    return [{"share": 1, **fault}]


def azure(sim, **kwargs) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0, **kwargs)


def async_azure(sim) -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)


def realtime_ga(sim) -> AsyncOpenAI:
    """The openai SDK on the Realtime API's GA path (/openai/v1/realtime), as ws:// to `sim`."""
    ws = sim.url.replace("http://", "ws://")
    return AsyncOpenAI(base_url=sim.url + "/openai/v1/", websocket_base_url=ws + "/openai/v1", api_key=sim.key)


async def until_event(connection, kind: str, seen: list[str]):
    """The next realtime event of type `kind`; every event's type on the way goes into `seen`."""
    async for event in connection:
        seen.append(event.type)
        if event.type == kind:
            return event
    raise AssertionError(f"the session ended before {kind}: {seen}")


def v1(sim) -> OpenAI:
    return OpenAI(base_url=sim.url + "/openai/v1/", api_key=sim.key, max_retries=0)


def researcher(simulator, model: str, instructions: str, client=None, **settings):
    """An Agents SDK agent with one lookup tool against the simulator (through `client`, an
    AsyncOpenAI, when given), and the queries it ran."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    called: list[str] = []

    @agents.function_tool
    def lookup(q: str) -> str:
        """Look something up."""
        called.append(q)
        return f"Found {q}."

    if client is None:
        client = AsyncOpenAI(base_url=simulator.url + "/openai/v1/", api_key=simulator.key, max_retries=0)
    agent = agents.Agent(
        name="Researcher",
        instructions=instructions,
        tools=[lookup],
        model=agents.OpenAIResponsesModel(model=model, openai_client=client),
        **settings,
    )
    return agents, agent, called


def count(text: str, encoding: str = "o200k_base") -> int:
    """Tokens of `text` as tiktoken counts them (the offline copy of the encodings)."""
    return len(tokens.encoding(encoding).encode(text, disallowed_special=()))


def encode(text: str, encoding: str = "o200k_base") -> list[int]:
    return tokens.encoding(encoding).encode(text, disallowed_special=())


def deployment_path(deployment: str, operation: str = "chat/completions", version: str | None = API_VERSION) -> str:
    query = f"?api-version={version}" if version is not None else ""
    return f"/openai/deployments/{deployment}/{operation}{query}"


def deployment_url(sim, deployment: str, operation: str = "chat/completions", version: str | None = API_VERSION) -> str:
    return sim.url + deployment_path(deployment, operation, version)


def post(
    sim,
    deployment: str,
    body: Any = None,
    operation: str = "chat/completions",
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response | http.Response:
    """POST to a deployment of a running simulator (an httpx response) or of an in-process
    stack (tests/inprocess.py: mitmproxy's response, read the same way)."""
    sent = {"api-key": sim.key, "content-type": "application/json", **(headers or {})}
    if isinstance(sim, Stack):
        path = deployment_path(deployment, operation)
        return (
            sim.post(path, json=body, headers=sent)
            if content is None
            else sim.post(path, content=content, headers=sent)
        )
    if content is None:
        return httpx.post(deployment_url(sim, deployment, operation), json=body, headers=sent, timeout=30)
    return httpx.post(deployment_url(sim, deployment, operation), content=content, headers=sent, timeout=30)


def assert_azure_error(
    response: httpx.Response | http.Response, status: int, code: str | None = None, message_start: str | None = None
) -> dict:
    """The response is Azure's JSON error with this status (and code, and message opening)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if message_start is not None:
        assert error["message"].startswith(message_start), error["message"]
    return error


def assert_still_serving(sim) -> None:
    """A good request right after a bad one is answered: the proxy is not wedged."""
    r = post(sim, "gpt-4o", {"messages": [{"role": "user", "content": "Still there?"}], "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 3


# A function schema with a nested object, an enum, an array, integer bounds and required fields.
BOOKING_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Lisbon"]},
        "guests": {"type": "integer", "minimum": 1, "maximum": 4},
        "nights": {"type": "integer", "exclusiveMinimum": 0, "maximum": 14},
        "dates": {"type": "array", "items": {"type": "string", "format": "date"}, "minItems": 1, "maxItems": 3},
        "contact": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 2},
                "email": {"type": "string", "format": "email"},
                "phone": {"type": "string"},
            },
            "required": ["name", "email"],
            "additionalProperties": False,
        },
        "breakfast": {"type": "boolean"},
    },
    "required": ["city", "guests", "dates", "contact"],
    "additionalProperties": False,
}
BOOKING_TOOL = {
    "type": "function",
    "function": {"name": "book_hotel", "description": "Book a hotel room.", "parameters": BOOKING_PARAMETERS},
}
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["location", "unit"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMETERS}}

# A strict structured-output schema with $defs, $ref and anyOf.
ORDER_SCHEMA = {
    "type": "object",
    "$defs": {
        "item": {
            "type": "object",
            "properties": {
                "sku": {"type": "string"},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 9},
                "size": {"type": "string", "enum": ["S", "M", "L"]},
            },
            "required": ["sku", "quantity", "size"],
            "additionalProperties": False,
        },
        "pickup": {
            "type": "object",
            "properties": {"store": {"type": "string"}},
            "required": ["store"],
            "additionalProperties": False,
        },
        "delivery": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        },
    },
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
        "fulfilment": {"anyOf": [{"$ref": "#/$defs/pickup"}, {"$ref": "#/$defs/delivery"}]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["items", "fulfilment", "note"],
    "additionalProperties": False,
}


def scrape(sim) -> dict[tuple[str, tuple], float]:
    if isinstance(sim, Stack):
        r = sim.get("/++/metrics", key=None)
    else:
        r = httpx.get(f"{sim.url}/++/metrics")  # open to scrapers: no key
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))
