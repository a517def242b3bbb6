"""The memory of large requests goes back to the system soon after they end (runtime/memory.py,
stages/reclaim.py)."""

from __future__ import annotations

import asyncio
import gc
import platform
import weakref

import pytest
from mitmproxy.test import taddons, tflow

from aoai.runtime import memory
from aoai.stages import reclaim
from aoai.stages.reclaim import Reclaim

MiB = 1024 * 1024


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting(clock: Clock, takes: float = 0.0):
    """A reclaimer whose collections are counted (and take `takes` seconds of the clock)."""
    calls = []

    def collect():
        calls.append(clock.now)
        clock.now += takes

    return memory.Reclaimer(clock, collect), calls


def flow_of(size: int, declared: int | None = None):
    f = tflow.tflow(resp=True)
    f.request.content = bytes(size)
    if declared is not None:
        f.request.headers["content-length"] = str(declared)
    return f


# --- when to collect -------------------------------------------------------------------------


def test_small_flows_are_left_to_pythons_own_schedule():
    reclaimer, calls = counting(Clock())
    for _ in range(1000):
        assert reclaimer.ended(64 * 1024) is False
    assert reclaimer.pending == 0 and not reclaimer.arriving(10 * MiB) and calls == []


def test_a_large_request_arriving_after_large_ones_ended_collects_them_first():
    reclaimer, _ = counting(Clock())
    assert reclaimer.ended(6 * MiB) is False  # its own memory is not free yet
    assert reclaimer.arriving(1024) is False  # a small request does not wait for it
    assert reclaimer.arriving(6 * MiB) is True
    reclaimer.collect()
    assert reclaimer.pending == 0 and reclaimer.arriving(6 * MiB) is False


def test_past_the_pending_bound_the_ended_flows_are_collected_as_the_next_ends():
    reclaimer, _ = counting(Clock())
    ended = [reclaimer.ended(5 * MiB) for _ in range(4)]
    assert ended == [False, False, False, True]
    reclaimer.collect(still_held=5 * MiB)
    assert reclaimer.pending == 5 * MiB  # the last flow, still being answered, waits for the next


def test_collections_take_at_most_their_share_of_the_time():
    clock = Clock()
    reclaimer, calls = counting(clock, takes=0.002)
    reclaimer.ended(8 * MiB)
    reclaimer.collect()
    reclaimer.ended(8 * MiB)
    assert not reclaimer.arriving(8 * MiB)
    clock.now = calls[0] + 0.002 / memory.MAX_SHARE
    assert reclaimer.arriving(8 * MiB)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_blocks_are_mapped_on_their_own_under_glibc():
    assert memory.map_large_blocks() is True


# --- the stage ----------------------------------------------------------------------------------


def held_in_a_cycle(flow) -> weakref.ref:
    """The flow held as mitmproxy's layers hold it: by objects that refer to each other, so only
    the cycle collector frees it."""
    layer = {"flow": flow}
    layer["context"] = {"layers": [layer]}
    return weakref.ref(flow)


@pytest.fixture
def no_automatic_collection():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_a_large_flow_is_freed_before_the_next_large_body_is_read(no_automatic_collection):
    stage = Reclaim()
    with taddons.context(stage):
        ended = flow_of(6 * MiB)
        gone = held_in_a_cycle(ended)
        stage.response(ended)
        del ended
        assert gone() is not None  # waiting for the collector
        stage.requestheaders(flow_of(0, declared=6 * MiB))
        assert gone() is None


def test_small_flows_cost_no_collection():
    clock = Clock()
    reclaimer, calls = counting(clock)
    stage = Reclaim(reclaimer)
    with taddons.context(stage):
        for _ in range(100):
            f = flow_of(2048, declared=2048)
            stage.requestheaders(f)
            stage.response(f)
    assert calls == [] and stage._timer is None


def test_a_moment_after_the_last_large_flow_ends_its_memory_is_collected(monkeypatch):
    monkeypatch.setattr(reclaim, "DELAY_S", 0.01)
    clock = Clock()
    reclaimer, calls = counting(clock)
    stage = Reclaim(reclaimer)

    async def main():
        stage.error(flow_of(2 * MiB))  # a client gone mid-answer ends a flow too
        assert calls == []
        await asyncio.sleep(0.1)

    with taddons.context(stage):
        asyncio.run(main())
    assert len(calls) == 1 and stage._timer is None


def test_audio_codecs_load_in_a_worker_thread_once_the_simulator_runs():
    """The first transcription must not load FFmpeg's libraries on the event loop (a stall for
    everyone, and ~20 MiB that look like that request's): they load as the simulator starts."""
    import subprocess
    import sys
    from pathlib import Path

    addons = Path(__file__).resolve().parents[2] / "addons"
    script = """
import asyncio, sys, threading
from aoai.runtime.config import SimulatorConfig
from aoai.runtime.services import Services
loaded_on = []
import builtins
real_import = builtins.__import__
def spy(name, *args, **kwargs):
    if name == "av" and "av" not in sys.modules:
        loaded_on.append(threading.current_thread() is threading.main_thread())
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
async def main():
    services = Services.build(SimulatorConfig())
    await services.start()
    await services.codecs_loaded
asyncio.run(main())
print("av" in sys.modules, loaded_on)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=addons, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "True [False]", out
