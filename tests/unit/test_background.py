"""Background responses: the run's status by the clock, cancel, stream resume, and a stream cut
by a fault stored as failed."""

from __future__ import annotations

import json

import pytest
from test_generate import answer
from unit_support import json_of, make_config, make_flow, services_for

from aoai.runtime import background
from aoai.runtime.background import build_run
from aoai.runtime.fault_book import FaultBook
from aoai.runtime.faults import Fault
from aoai.runtime.state import context_of
from aoai.stages.faults import FaultTiming


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FINAL = {"id": "resp_1", "object": "response", "status": "completed", "background": False, "error": None}
FINAL |= {"incomplete_details": None, "output": [{"type": "message", "id": "msg_1"}], "usage": {"total_tokens": 3}}


def timeline():
    opened = {**FINAL, "status": "in_progress", "output": [], "usage": None}
    events = [
        (-1, {"type": "response.created", "response": opened}),
        (-1, {"type": "response.in_progress", "response": opened}),
        (0, {"type": "response.output_text.delta", "delta": "a"}),
        (1, {"type": "response.output_text.delta", "delta": "b"}),
        (1, {"type": "response.completed", "response": FINAL}),
    ]
    return [(step, {**event, "sequence_number": n}) for n, (step, event) in enumerate(events)]


def a_run(now=1000.0, offsets=(2.0, 3.0)):
    return build_run(FINAL, timeline(), list(offsets), True, now)


def test_a_run_is_queued_then_in_progress_then_completed_by_the_clock():
    run = a_run()
    assert run.created()["status"] == "queued" and run.created()["output"] == []
    # Queued for half the time to the first token, done at the last token.
    seen = [(t, run.status(1000 + t)) for t in (0, 0.9, 1.0, 2.9, 3.0, 50)]
    assert seen == [(0, "queued"), (0.9, "queued"), (1.0, "in_progress"), (2.9, "in_progress")] + [
        (3.0, "completed"),
        (50, "completed"),
    ]
    assert run.body(1001.5)["output"] == [] and run.body(1001.5)["usage"] is None
    done = run.body(1003)
    assert done["output"] == FINAL["output"] and done["background"] is True and done["usage"] == FINAL["usage"]


def test_the_run_moves_by_time_not_by_how_often_it_is_read():
    run = a_run()
    assert [run.status(1000.5) for _ in range(100)] == ["queued"] * 100


def test_cancel_ends_a_running_response_and_changes_nothing_once_it_ended():
    run = a_run()
    assert run.cancel(1001.5)
    assert run.status(1001.6) == "cancelled" and run.body(1100)["status"] == "cancelled"
    assert run.body(1100)["output"] == []
    assert not run.cancel(1002)  # a repeated cancel: the same object
    finished = a_run()
    assert not finished.cancel(1010) and finished.status(1010) == "completed"


def test_events_are_numbered_again_with_the_queued_ones_and_resume_after_a_number():
    run = a_run()
    kinds = [(e["sequence_number"], e["type"]) for _, e in run.events]
    assert kinds[:3] == [(0, "response.created"), (1, "response.queued"), (2, "response.in_progress")]
    assert kinds[-1] == (5, "response.completed")
    assert run.events[0][1]["response"]["status"] == "queued" and run.events[2][0] == 1.0
    assert all(e["response"]["background"] for _, e in run.events if "response" in e)
    # Two seconds on: the events due by then are replayed at once, the rest wait their turn.
    later = run.events_after(2, 1002.0)
    assert [(due, e["sequence_number"]) for due, e in later] == [(0.0, 3), (1.0, 4), (1.0, 5)]
    assert run.events_after(5, 1010) == []


def test_a_cancelled_run_streams_no_event_after_the_cancel():
    run = a_run()
    run.cancel(1002.5)
    assert [e["sequence_number"] for _, e in run.events_after(-1, 1003)] == [0, 1, 2, 3]


def test_without_latency_a_run_is_done_at_once_but_still_created_queued():
    run = build_run(FINAL, timeline(), [], False, 5.0)
    assert run.created()["status"] == "queued" and run.status(5.0) == "completed"


# --- through the generator -----------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(background, "clock", fake)
    return fake


def create(config, **body):
    flow = make_flow("POST", "/openai/v1/responses", {"model": "gpt-4o", "input": "Hi", **body})
    return answer(flow, config).response


def get(config, path, method="GET"):
    return answer(make_flow(method, path), config).response


def test_background_create_answers_queued_and_retrieve_follows_the_latency(clock):
    config = make_config(latency_enabled=True)
    made = create(config, background=True)
    assert made.status_code == 200
    body = json_of(made)
    assert body["status"] == "queued" and body["background"] is True and body["output"] == []
    path = f"/openai/v1/responses/{body['id']}"
    assert json_of(get(config, path))["status"] == "queued"
    clock.now += 3600
    done = json_of(get(config, path))
    assert done["status"] == "completed" and done["output"] and done["usage"]["output_tokens"] > 0
    # The deployment path form reads the same store.
    assert json_of(get(config, f"/openai/responses/{body['id']}?api-version=2025-04-01-preview"))["status"] == (
        "completed"
    )


def test_cancel_a_queued_response_and_a_synchronous_one(clock):
    config = make_config(latency_enabled=True)
    queued = json_of(create(config, background=True))
    cancelled = get(config, f"/openai/v1/responses/{queued['id']}/cancel", "POST")
    assert cancelled.status_code == 200 and json_of(cancelled)["status"] == "cancelled"
    clock.now += 3600
    assert json_of(get(config, f"/openai/v1/responses/{queued['id']}"))["status"] == "cancelled"
    foreground = json_of(create(config))
    refused = get(config, f"/openai/v1/responses/{foreground['id']}/cancel", "POST")
    assert refused.status_code == 400
    assert json_of(refused)["error"]["message"] == "Cannot cancel a synchronous response."
    assert get(config, "/openai/v1/responses/resp_nothing/cancel", "POST").status_code == 404


def test_background_needs_store():
    refused = create(make_config(), background=True, store=False)
    assert refused.status_code == 400 and json_of(refused)["error"]["param"] == "background"


def events_of(response):
    frames = [f for f in response.content.decode().split("\n\n") if f]
    return [json.loads(f.split("\ndata: ", 1)[1]) for f in frames]


def test_a_background_stream_is_read_again_after_a_sequence_number(clock):
    config = make_config()
    streamed = create(config, background=True, stream=True)
    events = events_of(streamed)
    assert events[0]["type"] == "response.created" and events[0]["response"]["status"] == "queued"
    assert events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    response_id = events[0]["response"]["id"]
    resumed = events_of(get(config, f"/openai/v1/responses/{response_id}?stream=true&starting_after=3"))
    assert resumed == events[4:]


def test_a_stream_cut_by_a_fault_is_stored_as_failed():
    config = make_config(latency_enabled=True)
    cut = Fault("streamCut", share=1, after_tokens=1)
    for shapes, status in (((), "completed"), ((cut,), "failed")):
        flow = make_flow("POST", "/openai/v1/responses", {"model": "gpt-4o", "input": "Hi", "stream": True})
        context = context_of(answer(flow, config))
        response_id = events_of_frames(context.stream.frames)[0]["response"]["id"]
        context.fault_shapes = shapes
        FaultTiming(config, FaultBook()).request(flow)
        stored = services_for(config).responses.get(response_id).body
        assert stored["status"] == status and context.stream.cut == bool(shapes)
    assert stored["error"]["code"] == "server_error" and stored["output"] == [] and stored["usage"] is None
    retrieved = json_of(get(config, f"/openai/v1/responses/{response_id}"))
    assert retrieved["status"] == "failed"


def test_a_stream_cut_by_an_extension_is_stored_as_failed():
    config = make_config(latency_enabled=True)

    def cut_early(context):
        context.stream_cut_after = 1  # then the built-in generator answers

    flow = make_flow("POST", "/openai/v1/responses", {"model": "gpt-4o", "input": "Hi", "stream": True})
    context = context_of(answer(flow, config, before=[cut_early]))
    response_id = events_of_frames(context.stream.frames)[0]["response"]["id"]
    assert services_for(config).responses.get(response_id).body["status"] == "failed"


def events_of_frames(frames):
    return [json.loads(data.split(b"\ndata: ", 1)[1]) for _, data in frames if b"\ndata: " in data]
