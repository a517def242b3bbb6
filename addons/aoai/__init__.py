"""The Azure OpenAI simulator's addons, as `addons/simulator.py` stacks them.

    stages/    one module per stage, in the order simulator.py lists them
    generators/  the built-in generators, one module per API (the Generate stage calls them)
    runtime/   what the stages share: configuration, the route table and request state,
               latency, rate limits, recordings, streams, failures, and every use of
               mitmproxy internals (runtime/internals.py)
    openai/    the OpenAI domain: models, tokens, chat, completions, embeddings, checks
    docintel/  Document Intelligence: the service and its made-up layout engine
    wire.py    Azure's wire format: headers, JSON answers and error bodies
    extension.py  what extensions import

Imports point one way: stages use the generators, the runtime and the domains; the generators
use the runtime and the domains; the domains use neither. No module imports a stage but the
stack, and there is no import circle.

The flat module paths of earlier versions (`aoai.config`, `aoai.generate`, …) still import,
with a DeprecationWarning naming the new place.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# Old flat module -> where its names live now, tried in order.
MOVED: dict[str, tuple[str, ...]] = {
    "config": ("aoai.extension", "aoai.runtime.config", "aoai.runtime.state"),
    "generate": ("aoai.generators", "aoai.stages.generate"),
    "streaming": ("aoai.runtime.streams", "aoai.stages.streaming"),
    "client_socket": ("aoai.runtime.internals",),
    **{
        name: (f"aoai.openai.{name}",)
        for name in (
            "catalogue",
            "chat",
            "completions",
            "embeddings",
            "schema_values",
            "shapes",
            "text",
            "tokens",
            "validation",
        )
    },
    "latency": ("aoai.runtime.latency", "aoai.runtime.gates"),
    **{name: (f"aoai.runtime.{name}",) for name in ("limits", "recording")},
    **{
        name: (f"aoai.stages.{name}",)
        for name in (
            "auth",
            "extensions",
            "flowcap",
            "management",
            "metrics",
            "notfound",
            "pacing",
            "ratelimit",
            "record",
            "replay",
            "routing",
            "settings",
        )
    },
}


def _lookup(targets: tuple[str, ...], name: str):
    for target in targets:
        module = importlib.import_module(target)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"{name!r} is no longer in the simulator (looked in {', '.join(targets)})")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `aoai.<old>` as a module whose names are looked up where they live now."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.partition(".")
        if head == __name__ and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        targets = MOVED[module.__name__.partition(".")[2]]
        warnings.warn(
            f"{module.__name__} is deprecated: extensions import from aoai.extension; the code now "
            f"lives in {targets[-1] if len(targets) == 1 else ', '.join(targets)}",
            DeprecationWarning,
            stacklevel=2,
        )
        module.__getattr__ = functools.partial(_lookup, targets)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
