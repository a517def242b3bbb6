"""The simulator on a lean mitmproxy master: what `aoai-simulator`, `make run` and the container
run (`python addons/simulator.py [mitmdump options]`).

mitmdump's master holds some 35 built-in addons, and every event of every flow walks all of
them (a context manager and a generator per addon per event) though the simulator uses a few:
that walk was about half of a simulator process's time. `LeanMaster` holds only these, in
mitmdump's order, with the simulator's addons where mitmdump puts a script's, and walks them
once per event of a flow instead of twice (`LeanAddons`):

* `Core`: option checks and the `set` command (PATCH /++/config and mitmweb's editor use
  options, and Core refuses inconsistent ones);
* `Block`: `block_global`, so a simulator on a public address refuses public clients unless
  told otherwise, as mitmdump does;
* `Proxyserver`: the listeners, modes (reverse toward Azure for record mode, HTTPS and HTTP/2
  on the same port), connections and WebSockets (realtime sessions);
* the simulator's addons, then `ScriptLoader` (`-s` adds scripts of one's own after them);
* `NextLayer`: which protocol layer each connection gets (TLS, HTTP/1, HTTP/2, WebSocket);
* `TlsConfig`: the certificates HTTPS clients are shown (mitmproxy's CA in `confdir`, or
  SIMULATOR_TLS_CERT) and TLS toward Azure in record mode;
* `UpdateAltSvc`: in record mode, Azure's Alt-Svc headers point clients back at the simulator;
* `Dumper`: a line per flow with `--set flow_detail=1` (mitmdump's default) or more; here the
  default is 0, no line per request (`-v` gives 2, as in mitmdump);
* `ErrorCheck`: an error logged during start-up ends the process (the simulator's own
  refusals end it earlier, in one line);
* the terminal log (mitmproxy's `TermLog`), with the start-up banner.

Left out, as the simulator uses none of them: playback (client and server), map local and
remote, modify body and headers, blocklist, anticache, anticomp, sticky cookies and auth,
proxy auth and upstream auth, save (-w) and HAR, the browser, the onboarding app (mitm.it),
the DNS resolver, h2c refusal, reading flows from files, and mitmdump's commands on flows.
`mitmdump -s addons/simulator.py` keeps every one of them, and `mitmweb -s addons/simulator.py`
adds its web UI.

The command line is mitmdump's own parser (`--set name=value`, `-p`, `--listen-host`,
`--mode`, `-q`, `-v`, ...), read by mitmproxy's `run`; options of addons left out are taken
and ignored, as mitmproxy does with options no addon declares. The simulator's addons are
added once the command line is read, as mitmdump loads a script, but before the listener
opens (mitmdump opens it first): a start the simulator refuses never accepts a connection.

uvloop was measured in its place and left out: no fewer CPU seconds a request than asyncio's
own loop (the time goes to mitmproxy's hook dispatch and layers, not to the loop), and with
uvloop 0.23 on Python 3.13.0 mitmproxy's tasks fail to start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import addonmanager, ctx, hooks, master, options
from mitmproxy.addons import (
    block,
    core,
    dumper,
    errorcheck,
    next_layer,
    proxyserver,
    script,
    termlog,
    tlsconfig,
    update_alt_svc,
)
from mitmproxy.tools import cmdline
from mitmproxy.tools.main import run

from .processes import SIMULATOR

logger = logging.getLogger(__name__)

FLOW_DETAIL = 0  # no line per request unless asked for: formatting one costs as much as a stage


class LeanAddons(addonmanager.AddonManager):
    """mitmproxy's addon manager, less one walk. After each event of a flow, mitmproxy walks
    every addon again with an `update` event, for the flow lists of mitmweb and the console.
    None of the addons here has an `update` hook, so that second walk is made only once an
    addon that has one is registered (an extension's, a script's)."""

    def __init__(self, master: master.Master) -> None:
        super().__init__(master)
        self._updates: bool | None = None  # whether an addon has an `update` hook; None: look again

    def register(self, addon: Any) -> Any:
        self._updates = None
        return super().register(addon)

    def remove(self, addon: Any) -> None:
        self._updates = None
        super().remove(addon)

    def wants_updates(self) -> bool:
        if self._updates is None:
            self._updates = any(callable(getattr(a, "update", None)) for a in addonmanager.traverse(self.chain))
        return self._updates

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        if self.wants_updates():
            await super().handle_lifecycle(event)
        else:
            await self.trigger_event(event)


class LeanMaster(master.Master):
    """A mitmproxy master with only the built-in addons the simulator relies on (the module's
    docstring says which and why); `add_simulator` puts the simulator's among them."""

    def __init__(self, opts: options.Options, event_loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(opts, event_loop=event_loop)
        self.addons = LeanAddons(self)
        # As Master does with_termlog, on this addon manager: the terminal log, the banner.
        self._termlog_addon = termlog.TermLog()
        self.addons.add(self._termlog_addon)
        self.addons.add(
            core.Core(),
            block.Block(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            update_alt_svc.UpdateAltSvc(),
        )
        # Every addon in the chain is visited on every event of every flow, whether or not it
        # has a hook for it. These three are registered (their options and commands exist, and
        # mitmproxy finds them by name), and join the chain only when the command line gives
        # them work: scripts with -s, a line per flow with flow_detail above 0. ErrorCheck has
        # no hooks: the master asks it by name whether start-up logged an error.
        self.scripts = self.addons.register(script.ScriptLoader())
        self.dumper = self.addons.register(dumper.Dumper())
        self.addons.register(errorcheck.ErrorCheck())
        self.options.update(flow_detail=FLOW_DETAIL)  # before the command line, which may change it

    def add_simulator(self, addons: Sequence[Any]) -> None:
        """Put `addons` where mitmdump's ScriptLoader holds a script's (after the listener,
        before the layers and TLS, so their hooks run first), and the scripts given with -s
        after them, as in `mitmdump -s addons/simulator.py -s other.py`; then configure them
        with every option, as mitmproxy does when it loads a script."""
        chain = self.addons.chain
        at = chain.index(self.addons.get("proxyserver")) + 1
        for addon in addons:
            self.addons.register(addon)
        extra = [self.scripts] if self.options.scripts else []
        chain[at:at] = [*addons, *extra]
        if self.options.flow_detail > 0:
            chain.append(self.dumper)
        every = set(self.options.keys())
        for addon in [*addons, *extra]:
            self.addons.invoke_addon_sync(addon, hooks.ConfigureHook(every))


def parser(opts: options.Options) -> argparse.ArgumentParser:
    """mitmdump's command line, named for this program; flags of options no addon here
    declares are left out by mitmproxy itself."""
    made = cmdline.mitmdump(opts)
    made.prog = "aoai-simulator"
    return made


def add_simulator_after_command_line(build: Callable[[], Sequence[Any]]) -> Callable[[argparse.Namespace], dict]:
    """mitmproxy's `run` calls this once the command line's options are set: the moment mitmdump
    would load a script. Returns the options mitmdump takes from a trailing filter expression
    (only the dumper's, here)."""

    def extra(args: argparse.Namespace) -> dict:
        lean = ctx.master
        if not isinstance(lean, LeanMaster):  # pragma: no cover (mitmproxy changed how run works)
            raise RuntimeError("mitmproxy's run() did not make the lean master current")
        _drop_the_simulators_own_script(lean.options)
        lean.add_simulator(build())
        # After the simulator's checks, so that a start they refuse prints their one line alone.
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        logger.info("Loaded the simulator from %s (lean launcher)", package)
        if args.filter_args:
            return {"dumper_filter": " ".join(args.filter_args)}
        return {}

    return extra


def _drop_the_simulators_own_script(opts: options.Options) -> None:
    """`-s addons/simulator.py`, as mitmdump needs it, would load every stage a second time:
    the launcher has them already, so that script is left out (said once), others kept."""
    own = os.path.realpath(SIMULATOR)
    kept = [s for s in opts.scripts if os.path.realpath(os.path.expanduser(s)) != own]
    if len(kept) != len(opts.scripts):
        logger.warning("-s %s: the launcher runs the simulator already; that script is not loaded again", own)
        opts.update(scripts=kept)


def main(argv: Sequence[str] | None = None, build: Callable[[], Sequence[Any]] | None = None) -> int:
    """Run the simulator on the lean master with mitmdump's command line until SIGTERM or Ctrl-C."""
    if build is None:
        from .assembly import simulator_addons

        build = simulator_addons
    arguments = sys.argv[1:] if argv is None else list(argv)
    run(LeanMaster, parser, arguments, add_simulator_after_command_line(build))
    return 0


if __name__ == "__main__":
    sys.exit(main())
