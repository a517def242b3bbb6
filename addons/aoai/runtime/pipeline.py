"""The stages as one mitmproxy addon: one dispatch per event instead of one per stage.

mitmproxy delivers every event to every addon it holds: for each it walks the addon and its
children, looks the hook up by name and calls it inside a context manager that logs what it
raises. With a score of stages that walk costs more than most stages' own work. `Pipeline` is
registered in their place. For each event it holds the bound hooks of just the stages (and
their child addons, depth first, as mitmproxy orders them) that define it, and calls them in
order, awaiting what they return, with what mitmproxy's walk gives them:

* every stage sees every event, whatever an earlier one did to the flow (a stage that answers
  sets `flow.response`; later stages see it and step aside themselves);
* a request hook (`requestheaders`, `request`, `responseheaders`, `response`) that raises ends
  its request with Azure's 500 (runtime/failures.py: fail closed); any other hook that raises
  is logged with its traceback, as mitmproxy logs it, and the next stage goes on;
* `AddonHalt` stops the event and `OptionsError` refuses the settings, as they do in mitmproxy.

Child addons added while the proxy runs (extensions, which the Extensions stage registers when
it is configured) are dispatched at their parent's position from the next event on: the tables
are rebuilt after each `configure` and `running`, and on `refresh()`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

from mitmproxy import addonmanager, exceptions, hooks, http
from mitmproxy.proxy import layers, server_hooks  # noqa: F401  (they declare the proxy's hooks)

from .failures import FLOW_HOOKS, internal_error

logger = logging.getLogger(__name__)

# A hook of one stage, and what a failure of it is called in the log and in the 500.
Call = tuple[Callable[..., Any], str]
Fail = Callable[[tuple[Any, ...], str, Exception], None]
# Hooks the pipeline keeps to itself: load runs once per stage as mitmproxy's register would;
# configure and running also refresh the tables.
OWN_HOOKS = ("load", "configure", "running")


def hook_names() -> frozenset[str]:
    """Every event mitmproxy has (each hook class registers its name when it is declared)."""
    return frozenset(hooks.all_hooks) | {addonmanager.LoadHook.name}


def members(stages: Iterable[object]) -> tuple[object, ...]:
    """The stages and their child addons (`addons`), depth first, in the order mitmproxy would
    call them."""
    found: list[object] = []
    for stage in stages:
        found.append(stage)
        if hasattr(stage, "addons"):
            found.extend(members(stage.addons))
    return tuple(found)


def where(member: object, hook: str) -> str:
    """How a failed hook is named: the stage's class, or the extension's name."""
    label = member.__name__ if isinstance(member, ModuleType) else type(member).__name__
    return f"{label} ({hook} hook)"


def hooks_of(chain: Sequence[object], hook: str) -> tuple[Call, ...]:
    """The bound `hook` of each member of `chain` that defines one, in order. A module whose
    attribute of that name is an imported module (say `log`) has no such hook, as in mitmproxy."""
    found: list[Call] = []
    for member in chain:
        function = getattr(member, hook, None)
        if function is None or isinstance(function, ModuleType):
            continue
        if not callable(function):
            raise exceptions.AddonManagerError(f"Addon handler {hook} ({member}) not callable")  # type: ignore[no-untyped-call]
        found.append((function, where(member, hook)))
    return tuple(found)


def answer_with_500(args: tuple[Any, ...], label: str, error: Exception) -> None:
    """Fail closed: the request a hook failed on gets Azure's 500 (its traceback is logged)."""
    flow = args[0]
    if isinstance(flow, http.HTTPFlow):
        flow.response = internal_error(flow, label, error)
    else:
        log_error(args, label, error)


def log_error(args: tuple[Any, ...], label: str, error: Exception) -> None:
    """What mitmproxy does with an addon's exception: log it, and go on with the next addon."""
    logger.error("Addon error: %s in %s", error, label, exc_info=error)


def dispatcher(calls: tuple[Call, ...], fail: Fail) -> Callable[..., Any]:
    """One function calling `calls` in order. It stays synchronous (no coroutine is made) until
    a hook returns an awaitable; from there on the rest runs in a coroutine it returns, which
    mitmproxy awaits, so each hook still starts after the one before has finished."""

    def dispatch(*args: Any) -> Any:
        for index, (call, label) in enumerate(calls):
            try:
                result = call(*args)
            except (exceptions.AddonHalt, exceptions.OptionsError):
                raise
            except Exception as e:
                fail(args, label, e)
                continue
            if result is not None and inspect.isawaitable(result):
                return _finish(result, label, calls[index + 1 :], args, fail)
        return None

    dispatch.calls = calls  # type: ignore[attr-defined]  # for tests and for the curious
    return dispatch


async def _finish(
    pending: Awaitable[Any], label: str, rest: tuple[Call, ...], args: tuple[Any, ...], fail: Fail
) -> None:
    try:
        await pending
    except (exceptions.AddonHalt, exceptions.OptionsError):
        raise
    except Exception as e:
        fail(args, label, e)
    for call, label in rest:
        try:
            result = call(*args)
            if result is not None and inspect.isawaitable(result):
                await result
        except (exceptions.AddonHalt, exceptions.OptionsError):
            raise
        except Exception as e:
            fail(args, label, e)


class Pipeline:
    """The stages, registered with mitmproxy as one addon (see the module's docstring)."""

    def __init__(self, stages: Sequence[object]):
        self.stages = tuple(stages)
        self._hooks: set[str] = set()  # the event hooks set on this instance
        self._configure: Callable[..., Any] = dispatcher((), log_error)
        self._running: Callable[..., Any] = dispatcher((), log_error)
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the hook tables from what the stages and their child addons define now. It
        runs after `configure` (extensions are loaded then) and `running` (a stage may drop a
        hook it does not need, such as FlowCap's without mitmweb)."""
        current = members(self.stages)
        tables = {name: hooks_of(current, name) for name in hook_names() - set(OWN_HOOKS)}
        for name in self._hooks:
            delattr(self, name)
        self._hooks = set()
        for name, calls in tables.items():
            if calls:
                fail = answer_with_500 if name in FLOW_HOOKS else log_error
                setattr(self, name, dispatcher(calls, fail))
                self._hooks.add(name)
        self._configure = dispatcher(hooks_of(current, "configure"), log_error)
        self._running = dispatcher(hooks_of(current, "running"), log_error)

    def load(self, loader: addonmanager.Loader) -> None:
        # Each stage declares its options, in order. mitmproxy collects the commands of the
        # addons it walks; the stages are not walked, so theirs are collected here.
        for member in members(self.stages):
            function = getattr(member, "load", None)
            if callable(function):
                function(loader)
            loader.master.commands.collect_commands(member)

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        finally:
            self.refresh()  # the Extensions stage loads extensions when it is configured

    def running(self) -> Awaitable[None] | None:
        started = self._running()
        if started is None:
            self.refresh()
            return None
        return self._refresh_after(started)

    async def _refresh_after(self, started: Awaitable[None]) -> None:
        try:
            await started
        finally:
            self.refresh()


def skip_message_type_checks() -> None:
    """mitmproxy checks the type of every field of each request and response it makes (a check
    for its own development: `python -O` leaves it out). A simulator makes two of them per
    request, and the check costs about a twentieth of the proxy's time, so it is left out as
    `-O` would; what the stages put in a message is typed and checked by mypy instead."""
    if "__post_init__" in vars(http.MessageData):
        http.MessageData.__post_init__ = _unchecked  # type: ignore[method-assign]


def _unchecked(self: http.MessageData) -> None:
    return None
