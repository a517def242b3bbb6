"""The lean master (aoai/launch/lean.py): which of mitmproxy's addons it holds, where the
simulator's go among them, what joins only when asked, and the event-loop switch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mitmproxy import options
from mitmproxy.addonmanager import _get_name
from mitmproxy.tools import main as mitmproxy_main

from aoai.launch import lean

# mitmproxy's names of the built-in addons every event walks, in chain order (TermLog first).
KEPT = ["termlog", "core", "block", "proxyserver", "nextlayer", "tlsconfig", "updatealtsvc"]


class Stage:
    """Stands in for a simulator stage: records the options it was configured with."""

    def __init__(self, name: str):
        self.name = name
        self.configured: list[set[str]] = []

    def configure(self, updated: set[str]) -> None:
        self.configured.append(set(updated))


@contextmanager
def lean_master(*option_specs: str) -> Iterator[lean.LeanMaster]:
    """A LeanMaster on a running loop, options set as the command line would, torn down after."""
    loop = asyncio.new_event_loop()
    try:

        async def make() -> lean.LeanMaster:
            made = lean.LeanMaster(options.Options())
            made.options.set(*option_specs)
            return made

        master = loop.run_until_complete(make())
        try:
            yield master
        finally:
            master.addons.get("errorcheck").finish()
            loop.run_until_complete(master.done())
    finally:
        loop.close()


def add_simulator(master: lean.LeanMaster, stages: list[Stage]) -> None:
    """As mitmproxy's run does: on the running loop (a script loaded with -s starts a task)."""

    async def add() -> None:
        master.add_simulator(stages)

    master.event_loop.run_until_complete(add())


def names(master: lean.LeanMaster) -> list[str]:
    return [_get_name(a) for a in master.addons.chain]


def test_the_chain_holds_only_what_the_simulator_uses():
    with lean_master() as master:
        assert names(master) == KEPT
        # Registered, so their options, commands and names exist, though no event walks them.
        for name in ("scriptloader", "dumper", "errorcheck"):
            assert master.addons.get(name) is not None
        assert master.options.flow_detail == 0  # no line per request unless asked for


def test_the_simulator_goes_after_the_listener_and_before_the_layers_and_tls():
    with lean_master() as master:
        stages = [Stage("stage_a"), Stage("stage_b")]
        add_simulator(master, stages)
        assert names(master) == [*KEPT[:4], "stage_a", "stage_b", *KEPT[4:]]
        assert master.addons.get("stage_b") is stages[1]
        # Configured once with every option, as mitmproxy configures a script it loads.
        for stage in stages:
            assert stage.configured == [set(master.options.keys())]
        master.options.update(block_global=False)
        assert stages[0].configured[-1] == {"block_global"}  # later changes reach them as to any addon


def test_scripts_follow_the_simulator_and_the_dumper_comes_last_when_asked(tmp_path):
    script = tmp_path / "mine.py"
    script.write_text("def response(flow):\n    pass\n")
    with lean_master(f"scripts={script}", "flow_detail=1") as master:
        add_simulator(master, [Stage("stage_a")])
        assert names(master) == [*KEPT[:4], "stage_a", "scriptloader", *KEPT[4:], "dumper"]


class Counter:
    """An addon that counts the flow events it sees, and the update events if it has the hook."""

    def __init__(self, name: str):
        self.name = name
        self.requests = 0

    def request(self, flow) -> None:
        self.requests += 1


class Watcher(Counter):
    def __init__(self, name: str):
        super().__init__(name)
        self.updates = 0

    def update(self, flows) -> None:
        self.updates += 1


def test_the_update_walk_is_made_only_once_an_addon_has_the_hook():
    from mitmproxy.proxy.layers.http import HttpRequestHook
    from mitmproxy.test import tflow

    with lean_master() as master:
        counter = Counter("counter")
        master.addons.add(counter)
        flow = tflow.tflow()
        walks = []
        trigger = master.addons.trigger_event

        async def counted(event):
            walks.append(event.name)
            await trigger(event)

        master.addons.trigger_event = counted
        run = master.event_loop.run_until_complete
        run(master.addons.handle_lifecycle(HttpRequestHook(flow)))
        assert (walks, counter.requests) == (["request"], 1)
        assert not master.addons.wants_updates()
        # An addon with an `update` hook (an extension's, a script's) gets it after every event.
        watcher = Watcher("watcher")
        master.addons.add(watcher)
        run(master.addons.handle_lifecycle(HttpRequestHook(flow)))
        assert walks == ["request", "request", "update"]
        assert (counter.requests, watcher.requests, watcher.updates) == (2, 1, 1)
        master.addons.remove(watcher)
        run(master.addons.handle_lifecycle(HttpRequestHook(flow)))
        assert walks[-1] == "request" and counter.requests == 3


def test_an_update_hook_nested_in_an_addon_counts():
    with lean_master() as master:
        holder = Counter("holder")
        holder.addons = [Watcher("nested")]  # as the extensions stage holds an extension's module
        master.addons.add(holder)
        assert master.addons.wants_updates()


def test_the_command_line_is_mitmdumps():
    with lean_master() as master:
        parser = lean.parser(master.options)
        args = parser.parse_args(
            ["--set", "simulator_seed=3", "-p", "9000", "--listen-host", "127.0.0.1", "-s", "x.py"]
        )
        assert args.setoptions == ["simulator_seed=3"]
        assert (args.listen_port, args.listen_host, args.scripts) == (9000, "127.0.0.1", ["x.py"])
        assert parser.prog == "aoai-simulator"
        # A flag of an addon left out is not offered (mitmproxy leaves out options nobody declares).
        with pytest.raises(SystemExit):
            parser.parse_args(["--map-local", "|x|y"])


def test_verbose_and_quiet_set_the_flow_detail_as_in_mitmdump():
    with lean_master() as master:
        parser = lean.parser(master.options)
        mitmproxy_main.process_options(parser, master.options, parser.parse_args(["-v"]))
        assert master.options.flow_detail == 2
        mitmproxy_main.process_options(parser, master.options, parser.parse_args(["-q"]))
        assert master.options.flow_detail == 0
