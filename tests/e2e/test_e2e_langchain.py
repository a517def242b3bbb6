"""A deployments file, and LangChain's Azure classes against a real mitmdump.

The deployments have names of their own (not model names), as real Azure resources do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from conftest import API_VERSION, Simulator, start_simulator
from helpers import HELLO_PROMPT_TOKENS, WEATHER_PARAMETERS, WEATHER_TOOL, azure, count, v1
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import AzureChatOpenAI, AzureOpenAIEmbeddings
from pydantic import BaseModel, Field

from aoai.openai import tokens

DEPLOYMENTS = {
    "my-gpt4o": {"model": "gpt-4o", "tokensPerMinute": 30000},
    "my-embedder": {"model": "text-embedding-3-small", "tokensPerMinute": 100000},
    "my-instruct": {"model": "gpt-35-turbo-instruct"},
}
LC_HELLO = [SystemMessage("You are a helpful assistant."), HumanMessage("Hello!")]


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Iterator[Simulator]:
    folder = tmp_path_factory.mktemp("deployments")
    path = folder / "deployments.json"
    path.write_text(json.dumps(DEPLOYMENTS))
    tokens.install_offline_encodings()  # LangChain counts tokens with tiktoken, offline
    started = start_simulator(folder, {"SIMULATOR_LATENCY": "false", "OPENAI_DEPLOYMENT_CONFIG_PATH": str(path)})
    yield started
    started.stop()


def chat_model(sim: Simulator, **kwargs) -> AzureChatOpenAI:
    return AzureChatOpenAI(
        azure_endpoint=sim.url,
        api_key=sim.key,
        api_version=API_VERSION,
        azure_deployment="my-gpt4o",
        max_retries=0,
        **kwargs,
    )


def embedder(sim: Simulator) -> AzureOpenAIEmbeddings:
    return AzureOpenAIEmbeddings(
        azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, azure_deployment="my-embedder", max_retries=0
    )


# --- the deployments file -----------------------------------------------------------------


def test_file_deployments_answer_by_name_with_their_quota(sim):
    raw = azure(sim).chat.completions.with_raw_response.create(
        model="my-gpt4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert raw.parse().model == "gpt-4o-2024-11-20"
    assert raw.parse().usage.completion_tokens == 4
    assert raw.headers["x-ratelimit-limit-tokens"] == "30000"
    completion = azure(sim).completions.create(model="my-instruct", prompt="Say", max_tokens=2)
    assert completion.model == "gpt-35-turbo-instruct" and completion.usage.completion_tokens == 2


def test_file_deployments_replace_the_defaults(sim):
    config = httpx.get(sim.url + "/++/config", headers={"api-key": sim.key}).json()
    assert config["deployments"] == DEPLOYMENTS
    assert sorted(m.id for m in v1(sim).models.list()) == sorted(DEPLOYMENTS)


# --- chat ---------------------------------------------------------------------------------


def test_langchain_invoke(sim):
    answer = chat_model(sim, max_tokens=40).invoke(LC_HELLO)
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata["input_tokens"] == HELLO_PROMPT_TOKENS
    assert answer.usage_metadata["output_tokens"] == count(answer.content)
    assert answer.response_metadata["model_name"] == "gpt-4o-2024-11-20"
    assert answer.response_metadata["finish_reason"] in ("stop", "length")
    assert (answer.response_metadata["finish_reason"] == "length") == (count(answer.content) == 40)


def test_langchain_stream_with_usage(sim):
    chunks = list(chat_model(sim, max_tokens=10, stream_usage=True).stream(LC_HELLO))
    text = "".join(c.content for c in chunks)
    assert count(text) == 10
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.usage_metadata["output_tokens"] == 10
    assert total.usage_metadata["input_tokens"] == HELLO_PROMPT_TOKENS
    assert total.response_metadata["finish_reason"] == "length"


class Forecast(BaseModel):
    city: str
    days: list[int] = Field(description="Day numbers")
    warning: str | None


def test_langchain_structured_output(sim):
    forecast = chat_model(sim).with_structured_output(Forecast).invoke("The weather in Oslo?")
    assert isinstance(forecast, Forecast)
    assert all(isinstance(d, int) for d in forecast.days)


def test_langchain_tool_calls(sim):
    model = chat_model(sim).bind_tools([WEATHER_TOOL], tool_choice="get_weather")
    answer = model.invoke("The weather in Oslo?")
    (call,) = answer.tool_calls
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    jsonschema.validate(call["args"], WEATHER_PARAMETERS)


# --- embeddings ---------------------------------------------------------------------------


def test_langchain_embed_documents_and_query(sim):
    vectors = embedder(sim).embed_documents(["alpha", "beta", "alpha"])
    assert len(vectors) == 3 and all(len(v) == 1536 for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert math.sqrt(math.fsum(x * x for x in vectors[1])) == pytest.approx(1.0, abs=1e-5)
    query = embedder(sim).embed_query("alpha")
    assert query == pytest.approx(vectors[0], abs=1e-6)


def test_langchain_vectors_match_the_sdk_vectors(sim):
    # LangChain sends token arrays, the SDK the text: a store built by one is searched by the other.
    from_langchain = embedder(sim).embed_query("Where is my parcel?")
    from_sdk = azure(sim).embeddings.create(model="my-embedder", input="Where is my parcel?").data[0].embedding
    assert from_langchain == pytest.approx(from_sdk, abs=1e-6)
