"""Extensions: user code loaded from EXTENSION_PATH as extra mitmproxy addons.

Each `.py` file or package folder becomes an addon placed at this stage of the pipeline
(after auth and routing, before replay, recording and the generators), so every mitmproxy
hook it defines runs there, and options it declares appear like ours. Its
`initialize(config)`, if any, is called once with the shared `SimulatorConfig`, where it can
add generators and forwarders or allow bearer tokens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from mitmproxy import addonmanager, ctx, exceptions, hooks

from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.extensions import describe_error, extensions_paths, import_extension
from ..runtime.failures import guard
from ..runtime.options import Option, check, declare
from ..runtime.startup import Startup

logger = logging.getLogger(__name__)


def _paths(value: Sequence[str]) -> list[str]:
    """The option's entries, each perhaps several paths (commas or the OS path separator)."""
    return [path for entry in value for path in extensions_paths(entry)]


def _exist(value: Sequence[str]) -> None:
    for path in _paths(value):
        if not os.path.exists(os.path.expanduser(path)):
            raise ConfigError(f"EXTENSION_PATH: {path}: no such file or folder")


OPTIONS = (
    Option(
        "EXTENSION_PATH",
        Sequence[str],
        [],
        "Extension files or packages to load (in the environment: separated by commas).",
        parse=extensions_paths,
        check=_exist,
    ),
)


class Extensions:
    def __init__(
        self,
        config: SimulatorConfig,
        startup: Startup | None = None,
        settle: Sequence[Callable[[], None]] = (),
    ):
        self.config = config
        self.startup = startup or Startup()
        # What copies the settings of the stages after this one into the config, so that
        # initialize(config) sees all of them (mitmproxy configures the stages in order).
        self.settle = settle
        self.env_error: str | None = None
        self.addons: list[ModuleType] = []  # called right after this stage (child addons)
        self.loaded_paths: list[str] = []
        self.running_ = False
        # An extension has a `responseheaders` hook: paced streams then pass through mitmproxy's
        # layers (the loopback server), so that hook sees them, instead of straight to the client.
        self.sees_streams = False

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def configure(self, updated: set[str]) -> None:
        if "extension_path" not in updated:
            return
        if self.env_error:
            self.startup.refuse(self.env_error)
            return
        paths = _paths(ctx.options.extension_path)
        if paths == self.loaded_paths:
            return
        if self.loaded_paths:
            # initialize() has changed the shared config; that cannot be undone.
            raise exceptions.OptionsError(
                "EXTENSION_PATH: extensions cannot be changed while the simulator runs; restart it"
            )
        try:
            check(ctx.options, OPTIONS, updated)
            if paths:
                for settle in self.settle:
                    settle()
            for path in paths:
                self._load(path)
        except ConfigError as e:
            if self.running_:
                raise exceptions.OptionsError(str(e)) from None
            self.startup.refuse(str(e))
        self.loaded_paths = paths

    def _load(self, path: str) -> None:
        module = import_extension(path)
        initialize = getattr(module, "initialize", None)
        if callable(initialize):
            try:
                initialize(self.config)
            except Exception as e:
                raise ConfigError(f"EXTENSION_PATH: {path}: initialize(config) failed: {describe_error(e)}") from None
        # A hook that raises costs its request an Azure 500, never a trip upstream.
        guard(module, f"extension {path}")
        try:
            ctx.master.addons.register(module)
        except exceptions.AddonManagerError as e:
            raise ConfigError(f"EXTENSION_PATH: {path}: {e}") from None
        self.addons.append(module)
        if any(hasattr(addon, "responseheaders") for addon in addonmanager.traverse([module])):
            self.sees_streams = True
        ctx.master.addons.invoke_addon_sync(module, hooks.ConfigureHook(set(ctx.options.keys())))
        if self.running_:
            ctx.master.addons.invoke_addon_sync(module, hooks.RunningHook())
        logger.info("extension loaded: %s", path)

    def running(self) -> None:
        self.running_ = True
