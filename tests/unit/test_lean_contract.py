"""What the lean launcher (aoai/launch/lean.py) takes from mitmproxy, checked against the
installed mitmproxy: a release that moves any of it fails here, naming what moved, before a
user meets a launcher that cannot start. (The simulator's other uses of mitmproxy internals are
checked by tests/unit/test_internals.py.)"""

from __future__ import annotations

import argparse
import inspect

import mitmproxy.addons
import pytest
from mitmproxy import addonmanager, ctx, hooks, master, options
from mitmproxy.addons import block, core, dumper, errorcheck, next_layer, proxyserver, script, tlsconfig, update_alt_svc
from mitmproxy.tools import cmdline, main

from aoai.launch import lean

# mitmdump's built-in addons the lean master leaves out, each on purpose (lean.py says why).
# A new one in mitmproxy fails the test below: decide whether the simulator needs it.
LEFT_OUT = {
    "browser",
    "stripdnshttpsrecords",
    "blocklist",
    "anticache",
    "anticomp",
    "clientplayback",
    "commandhistory",
    "comment",
    "cut",
    "disableh2c",
    "export",
    "onboarding",
    "proxyauth",
    "dnsresolver",
    "serverplayback",
    "mapremote",
    "maplocal",
    "modifybody",
    "modifyheaders",
    "stickyauth",
    "stickycookie",
    "save",
    "savehar",
    "upstreamauth",
}
KEPT = {"core", "block", "proxyserver", "scriptloader", "nextlayer", "tlsconfig", "updatealtsvc"}


def why(what: str) -> str:
    return f"the installed mitmproxy changed {what}, which the lean launcher (aoai/launch/lean.py) relies on"


def test_every_default_addon_of_mitmdump_is_kept_or_left_out_on_purpose():
    defaults = {addonmanager._get_name(a) for a in mitmproxy.addons.default_addons()}
    assert defaults - KEPT - LEFT_OUT == set(), why("its default addons (new ones: keep or leave out?)")
    assert defaults >= KEPT, why("its default addons (one the lean master keeps is gone)")


@pytest.mark.parametrize(
    ("module", "name", "addon_name"),
    [
        (core, "Core", "core"),
        (block, "Block", "block"),
        (proxyserver, "Proxyserver", "proxyserver"),
        (script, "ScriptLoader", "scriptloader"),
        (next_layer, "NextLayer", "nextlayer"),
        (tlsconfig, "TlsConfig", "tlsconfig"),
        (update_alt_svc, "UpdateAltSvc", "updatealtsvc"),
        (dumper, "Dumper", "dumper"),
        (errorcheck, "ErrorCheck", "errorcheck"),
    ],
)
def test_the_addons_it_holds_exist_under_the_names_it_asks_for(module, name, addon_name):
    cls = getattr(module, name, None)
    assert cls is not None, why(f"mitmproxy.addons.{module.__name__.rpartition('.')[2]}.{name}")
    addon = cls()
    assert addonmanager._get_name(addon) == addon_name, why(f"the name of {name}")
    if isinstance(addon, errorcheck.ErrorCheck):
        addon.finish()  # it watches the log from its creation


def test_the_master_and_its_addon_manager_offer_what_it_uses():
    parameters = inspect.signature(master.Master.__init__).parameters
    assert {"opts", "event_loop", "with_termlog"} <= set(parameters), why("Master's constructor")
    for method in ("register", "get", "add", "invoke_addon_sync"):
        assert callable(getattr(addonmanager.AddonManager, method, None)), why(f"AddonManager.{method}")
    assert "updated" in inspect.signature(hooks.ConfigureHook).parameters, why("ConfigureHook")
    # Master.run finds the listener and the start-up check by name.
    source = inspect.getsource(master.Master.run)
    assert 'get("errorcheck")' in source and 'get("proxyserver")' in source, why("how Master.run finds its addons")
    assert callable(getattr(errorcheck.ErrorCheck, "finish", None)), why("ErrorCheck.finish")


def test_the_update_walk_it_spares_is_the_one_mitmproxy_makes_after_each_flow_event():
    """LeanAddons overrides handle_lifecycle, through which the proxy hands every flow event to
    the addons, and which walks them again with an `update` event."""
    source = inspect.getsource(addonmanager.AddonManager.handle_lifecycle)
    assert "trigger_event(event)" in source and "UpdateHook" in source, why("AddonManager.handle_lifecycle")
    from mitmproxy.proxy import mode_servers

    assert "addons.handle_lifecycle(" in inspect.getsource(mode_servers), why("how the proxy hands events to addons")
    assert callable(addonmanager.traverse), why("addonmanager.traverse")


def test_its_terminal_log_is_the_one_master_sets_up():
    from mitmproxy.addons import termlog

    assert callable(getattr(termlog.TermLog, "uninstall", None)), why("TermLog.uninstall")
    assert "_termlog_addon" in inspect.getsource(master.Master.done), why("how Master.done ends the terminal log")


def test_a_lean_master_is_current_and_keeps_its_chain_in_a_list():
    """`ctx.master` is how `run`'s extra step reaches the master it made, and the chain is the
    list the simulator's addons are placed in."""
    import asyncio

    async def make() -> lean.LeanMaster:
        return lean.LeanMaster(options.Options())

    loop = asyncio.new_event_loop()
    try:
        made = loop.run_until_complete(make())
        try:
            assert ctx.master is made, why("ctx.master")
            assert isinstance(made.addons.chain, list), why("AddonManager.chain")
            assert made.addons.register(stand_in := type("StandIn", (), {})()) is stand_in, why("register's result")
            for option in ("flow_detail", "dumper_filter", "scripts", "block_global", "keep_alt_svc_header"):
                assert option in made.options, why(f"the option {option}")
        finally:
            made.addons.get("errorcheck").finish()
            loop.run_until_complete(made.done())
    finally:
        loop.close()


def test_run_takes_a_master_class_a_parser_and_an_extra_step():
    parameters = list(inspect.signature(main.run).parameters)
    assert parameters[:4] == ["master_cls", "make_parser", "arguments", "extra"], why("mitmproxy.tools.main.run")
    # The extra step comes after the command line's options are set, and its options are applied.
    source = inspect.getsource(main.run)
    assert source.index("process_options(") < source.index("extra(args)"), why("when run calls extra")
    assert "opts.update(**extra(args))" in source, why("what run does with extra's result")


def test_mitmdumps_parser_takes_the_options_users_pass():
    opts = options.Options()
    parser = cmdline.mitmdump(opts)
    assert isinstance(parser, argparse.ArgumentParser), why("cmdline.mitmdump")
    args = parser.parse_args(["--set", "a=b", "-p", "9", "--listen-host", "h", "--mode", "reverse:http://x", "-q", "f"])
    assert args.setoptions == ["a=b"] and args.listen_port == 9 and args.listen_host == "h", why("mitmdump's flags")
    assert args.mode == ["reverse:http://x"] and args.quiet and args.filter_args == ["f"], why("mitmdump's flags")
