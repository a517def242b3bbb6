"""The pacing stage holds an answer in the response hook until it is due."""

import asyncio
import time

from mitmproxy import http
from mitmproxy.test import taddons, tflow
from unit_support import run

from aoai.runtime import latency
from aoai.runtime.state import context_for, context_of
from aoai.stages.pacing import Pacing


def held_flow(seconds: float, gate=None, arrived_ago: float = 0.0) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request.timestamp_start = time.time() - arrived_ago
    latency.hold(context_for(flow), seconds, gate)
    return flow


def hold(pacing: Pacing, flow: http.HTTPFlow) -> float:
    """Run the response hook as mitmproxy does; how long it held the flow."""

    async def main():
        with taddons.context(pacing):
            started = time.monotonic()
            pending = pacing.response(flow)
            if pending is not None:
                await pending
            return time.monotonic() - started

    return run(main())


def test_an_answer_leaves_when_due_counted_from_arrival():
    flow = held_flow(0.25, arrived_ago=0.1)
    took = hold(Pacing(), flow)
    assert took < 0.2  # the 0.1 s since arrival counts
    assert flow.response.timestamp_end >= flow.request.timestamp_start + 0.245  # not before it is due
    assert context_of(flow).hold is None


def test_an_overdue_answer_leaves_at_once():
    flow = held_flow(0.05, arrived_ago=1.0)
    assert hold(Pacing(), flow) < 0.05


def test_answers_without_a_hold_are_not_touched():
    flow = tflow.tflow(resp=True)
    assert Pacing().response(flow) is None


def test_a_gate_queues_answers_and_starts_their_clock_when_let_in():
    async def main():
        gate = asyncio.Semaphore(1)
        pacing = Pacing()
        flows = [held_flow(0.1, gate) for _ in range(3)]
        with taddons.context(pacing):
            started = time.monotonic()
            await asyncio.gather(*(pacing.response(f) for f in flows))
        return time.monotonic() - started

    assert run(main()) >= 0.29  # one at a time: 3 x 0.1 s
