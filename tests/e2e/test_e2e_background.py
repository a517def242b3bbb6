"""Background responses end to end with the openai SDK: create, poll until done, cancel, and a
background stream read again from a sequence number."""

from __future__ import annotations

import time

import openai
import pytest
from conftest import start_simulator
from helpers import v1

# 40 ms a token (first one included): an answer of a few dozen tokens runs for a second or more.
SLOW = {"LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN": "40"}
DONE = ("completed", "incomplete")


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    sim = start_simulator(tmp_path_factory.mktemp("sim"), SLOW)
    yield sim
    sim.stop()


def test_background_create_answers_at_once_and_polling_reaches_completed(slow):
    client = v1(slow)
    started = time.monotonic()
    response = client.responses.create(model="gpt-4o", input="Tell me a long story.", background=True)
    assert time.monotonic() - started < 1.0  # answered at once, not after the answer's tokens
    assert response.status == "queued" and response.background is True and response.output == []
    seen = [response.status]
    deadline = time.monotonic() + 60
    while response.status not in DONE and time.monotonic() < deadline:
        time.sleep(0.05)
        response = client.responses.retrieve(response.id)
        seen.append(response.status)
    assert response.status in DONE and response.output_text and response.usage.output_tokens > 0
    statuses = list(dict.fromkeys(seen))
    assert statuses[0] == "queued" and "in_progress" in statuses and statuses[-1] in DONE
    # Cancelling a finished one changes nothing; a synchronous one cannot be cancelled.
    assert client.responses.cancel(response.id).status == response.status
    foreground = client.responses.create(model="gpt-4o", input="Hi", max_output_tokens=16)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(foreground.id)
    assert refused.value.body["message"] == "Cannot cancel a synchronous response."


def test_cancel_a_running_background_response(slow):
    client = v1(slow)
    response = client.responses.create(
        model="gpt-4o", input="Tell me a long story.", background=True, max_output_tokens=400
    )
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    time.sleep(0.5)
    assert client.responses.retrieve(response.id).status == "cancelled"


def test_background_needs_store(slow):
    with pytest.raises(openai.BadRequestError) as refused:
        v1(slow).responses.create(model="gpt-4o", input="Hi", background=True, store=False)
    assert refused.value.body["param"] == "background"


def test_a_background_stream_resumes_after_a_sequence_number(slow):
    client = v1(slow)
    first = []
    with client.responses.create(model="gpt-4o", input="Tell me a story.", background=True, stream=True) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 6:
                break  # the client goes away mid-stream
    assert first[0].type == "response.created" and first[0].response.status == "queued"
    assert first[1].type == "response.queued"
    response_id, last = first[0].response.id, first[-1].sequence_number
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=last))
    assert rest[0].sequence_number == last + 1
    assert [e.sequence_number for e in rest] == list(range(last + 1, last + 1 + len(rest)))
    assert rest[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    assert text == rest[-1].response.output_text
