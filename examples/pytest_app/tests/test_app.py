"""The application's tests against the Azure OpenAI simulator, through its pytest plugin:
`aoai_simulator` (the session's simulator), `@pytest.mark.aoai` (a deployment, faults or a
content filter for one test) and `aoai_cassette` (answers replayed from cassettes/).

    pytest examples/pytest_app       # with the project installed, or from its checkout

The 429 test needs 1-second request windows: `aoai_env = RATE_LIMIT_REQUEST_WINDOW_SECONDS=1`
in the ini file (the project's pyproject.toml has it), or `--aoai-env RATE_LIMIT_REQUEST_WINDOW_SECONDS=1`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from openai import AzureOpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py, one folder up

import app

CAPITAL = "What is the capital of France?"


@pytest.fixture(autouse=True)
def azure_environment(aoai_simulator, monkeypatch):
    """The application finds the simulator where it would find Azure: in its environment."""
    for name, value in aoai_simulator.env().items():
        monkeypatch.setenv(name, value)


def noting(statuses: list[int], max_retries: int = 3) -> AzureOpenAI:
    """A client from the environment that notes every status it receives, retries included."""
    hooks = {"response": [lambda response: statuses.append(response.status_code)]}
    return AzureOpenAI(max_retries=max_retries, http_client=httpx.Client(event_hooks=hooks))


def test_an_answer():
    assert app.answer("What is Azure OpenAI?")


def test_a_streamed_answer():
    pieces = list(app.stream_answer("Tell me a story."))
    assert len(pieces) > 1 and "".join(pieces).strip()


# One request a second: the second question, asked at once, gets a 429, and the SDK retries it
# after the `retry-after-ms` the simulator gives (under a second).
@pytest.mark.aoai(deployments={"gpt-4o": {"model": "gpt-4o", "requestsPerMinute": 60}})
def test_a_429_is_retried_and_then_answered():
    statuses: list[int] = []
    client = noting(statuses)
    assert app.answer("First?", client) != app.BUSY
    assert app.answer("Second?", client) != app.BUSY
    assert statuses[:2] == [200, 429] and statuses[-1] == 200


@pytest.mark.aoai(faults=[{"kind": "503", "share": 1, "retryAfter": 1}])
def test_azure_unavailable_after_the_retries_is_told_politely():
    statuses: list[int] = []
    assert app.answer("Anyone there?", noting(statuses, max_retries=1)) == app.BUSY
    assert statuses == [503, 503]


@pytest.mark.aoai(content_filter={"gpt-4o": {"prompt": {"violence": [{"term": "sword", "severity": "high"}]}}})
def test_a_filtered_question_is_refused_without_a_retry():
    statuses: list[int] = []
    assert app.answer("How do I sharpen a sword?", noting(statuses)) == app.REFUSED
    assert statuses == [400]


# Recorded once from a simulator in record mode (record_cassettes.py); replayed from
# cassettes/test_app/ since, word for word.
def test_an_answer_from_the_cassette(aoai_cassette):
    assert app.answer(CAPITAL) == RECORDED_ANSWER


def test_a_stream_from_the_cassette(aoai_cassette):
    assert "".join(app.stream_answer(CAPITAL)) == RECORDED_STREAM


# What the simulator standing in for Azure answered when the cassettes were recorded.
RECORDED_ANSWER = (
    "Ipsum magnam dolore quisquam voluptatem labore ipsum eius. Dolor porro labore voluptatem voluptatem est. "
    "Aliquam aliquam consectetur quaerat velit. Aliquam dolorem non modi non tempora dolore. Quiquia"
)
RECORDED_STREAM = (
    "Modi magnam quiquia quiquia eius numquam consectetur. Quisquam labore quiquia consectetur etincidunt "
    "magnam dolorem quiquia. Ipsum dolorem non adipisci etincidunt. Quaerat"
)
