"""The Pipeline: the stages as one mitmproxy addon, each event dispatched to just the stages
that define its hook, in order, failing closed."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from mitmproxy import exceptions, hooks, http
from mitmproxy.proxy import layers
from mitmproxy.test import taddons, tflow

from aoai.runtime.pipeline import Pipeline, skip_message_type_checks


class Recorder:
    """A stage that notes each hook call in a shared list."""

    def __init__(self, name: str, seen: list[str]):
        self.label = name
        self.seen = seen


class Asks(Recorder):
    def request(self, flow: http.HTTPFlow) -> None:
        self.seen.append(f"{self.label}.request")


class Answers(Recorder):
    def response(self, flow: http.HTTPFlow) -> None:
        self.seen.append(f"{self.label}.response")


class Waits(Recorder):
    async def request(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0.01)
        self.seen.append(f"{self.label}.request")


class Breaks(Recorder):
    def request(self, flow: http.HTTPFlow) -> None:
        self.seen.append(f"{self.label}.request")
        raise ValueError("broken stage")

    def error(self, flow: http.HTTPFlow) -> None:
        self.seen.append(f"{self.label}.error")
        raise ValueError("broken error hook")


class BreaksLater(Recorder):
    async def request(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("broken after a wait")


class Halts(Recorder):
    def request(self, flow: http.HTTPFlow) -> None:
        self.seen.append(f"{self.label}.request")
        raise exceptions.AddonHalt()


class Declares(Recorder):
    def load(self, loader) -> None:
        loader.add_option("pipeline_test_option", int, 3, "An option a stage declares.")

    def configure(self, updated: set[str]) -> None:
        self.seen.append(f"{self.label}.configure")

    async def running(self) -> None:
        self.seen.append(f"{self.label}.running")


class Parent(Recorder):
    """A stage with child addons, added when it is configured (as the Extensions stage does)."""

    def __init__(self, name: str, seen: list[str], child: object):
        super().__init__(name, seen)
        self.child = child
        self.addons: list[object] = []

    def configure(self, updated: set[str]) -> None:
        if not self.addons:
            self.addons.append(self.child)


def flow() -> http.HTTPFlow:
    return tflow.tflow()


async def run(hook, f: http.HTTPFlow) -> None:
    result = hook(f)
    if result is not None:
        await result


def test_an_event_calls_just_the_stages_that_define_it_in_order():
    seen: list[str] = []
    pipeline = Pipeline([Asks("a", seen), Answers("b", seen), Asks("c", seen)])
    asyncio.run(run(pipeline.request, flow()))
    pipeline.response(flow())
    assert seen == ["a.request", "c.request", "b.response"]
    assert [label for _, label in pipeline.request.calls] == ["Asks (request hook)", "Asks (request hook)"]
    assert not hasattr(pipeline, "responseheaders")  # no stage has it: mitmproxy finds nothing to call


def test_a_hook_that_waits_is_awaited_before_the_next_stage():
    seen: list[str] = []
    pipeline = Pipeline([Asks("a", seen), Waits("b", seen), Asks("c", seen)])
    asyncio.run(run(pipeline.request, flow()))
    assert seen == ["a.request", "b.request", "c.request"]


def test_only_synchronous_hooks_make_no_coroutine():
    pipeline = Pipeline([Asks("a", []), Asks("b", [])])
    assert pipeline.request(flow()) is None


@pytest.mark.parametrize("broken", [Breaks, BreaksLater])
def test_a_stage_that_raises_ends_its_request_with_azures_500_and_the_next_stages_see_it(broken, caplog):
    seen: list[str] = []
    f = flow()
    f.response = None
    pipeline = Pipeline([broken("a", seen), Asks("b", seen)])
    with caplog.at_level(logging.ERROR):
        asyncio.run(run(pipeline.request, f))
    assert f.response is not None and f.response.status_code == 500
    body = json.loads(f.response.content or b"")
    assert body["error"]["code"] == "InternalServerError"
    assert f"{broken.__name__} (request hook)" in body["error"]["message"]
    assert seen[-1] == "b.request"  # the walk goes on, as mitmproxy's does
    assert any(record.exc_info for record in caplog.records)  # the traceback is in the log


def test_another_hook_that_raises_is_logged_and_the_next_stage_goes_on(caplog):
    seen: list[str] = []

    class Notes(Recorder):
        def error(self, flow: http.HTTPFlow) -> None:
            self.seen.append(f"{self.label}.error")

    f = flow()
    pipeline = Pipeline([Breaks("a", seen), Notes("b", seen)])
    with caplog.at_level(logging.ERROR):
        pipeline.error(f)
    assert seen == ["a.error", "b.error"]
    assert f.response is None or f.response.status_code != 500
    assert "broken error hook" in caplog.text


def test_addon_halt_stops_the_event():
    seen: list[str] = []
    pipeline = Pipeline([Halts("a", seen), Asks("b", seen)])
    with pytest.raises(exceptions.AddonHalt):
        pipeline.request(flow())
    assert seen == ["a.request"]


def test_lifecycle_hooks_reach_the_stages_through_mitmproxy():
    seen: list[str] = []
    pipeline = Pipeline([Declares("a", seen), Asks("b", seen)])

    async def main() -> None:
        with taddons.context(pipeline) as tctx:
            assert tctx.options.pipeline_test_option == 3  # the stage's load declared it
            tctx.configure(pipeline, pipeline_test_option=4)
            await tctx.master.running()
            await tctx.master.addons.handle_lifecycle(layers.http.HttpRequestHook(flow()))

    asyncio.run(main())
    assert seen == ["a.configure", "a.running", "b.request"]


def test_a_child_added_at_run_time_runs_at_its_parents_position_and_fails_closed():
    seen: list[str] = []
    child = Breaks("child", seen)
    pipeline = Pipeline([Asks("a", seen), Parent("parent", seen, child), Asks("c", seen)])
    f = flow()
    f.response = None

    async def main() -> None:
        with taddons.context(pipeline) as tctx:
            assert len(pipeline.request.calls) == 2
            tctx.master.addons.trigger(hooks.ConfigureHook(set()))  # the parent adds its child here
            await tctx.master.addons.handle_lifecycle(layers.http.HttpRequestHook(f))

    asyncio.run(main())
    assert seen == ["a.request", "child.request", "c.request"]
    assert f.response is not None and f.response.status_code == 500


def test_a_hook_that_is_not_callable_is_refused():
    class Odd:
        request = 3

    with pytest.raises(exceptions.AddonManagerError):
        Pipeline([Odd()])


def test_mitmproxys_message_type_check_is_left_out():
    skip_message_type_checks()
    # A wrong type no longer costs a check on every message made (as under python -O).
    http.Response(b"HTTP/1.1", 200, b"OK", http.Headers(), b"", None, 0, None)  # timestamp_start: an int


def test_a_hook_a_stage_drops_when_it_starts_is_no_longer_called():
    """FlowCap drops its hooks under mitmdump (no flows kept): the pipeline must not keep them."""
    seen: list[str] = []

    class Drops(Answers):
        def running(self) -> None:
            self.response = None  # type: ignore[assignment]

    pipeline = Pipeline([Drops("a", seen), Answers("b", seen)])

    async def main() -> None:
        with taddons.context(pipeline) as tctx:
            await tctx.master.running()
            await tctx.master.addons.handle_lifecycle(layers.http.HttpResponseHook(flow()))

    asyncio.run(main())
    assert seen == ["b.response"]
