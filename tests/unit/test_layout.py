"""The layout shows the design: imports point one way, and the stack (stack.py) lists the
stages folder exactly."""

import ast
import importlib
import importlib.util
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "addons" / "aoai"
DOMAINS = ("openai", "docintel")


def imported(path: Path) -> set[str]:
    """The aoai modules a file imports at run time (not those only under TYPE_CHECKING)."""
    package = ".".join(path.relative_to(PACKAGE.parent).parts[:-1])
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("aoai")}


def files(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))  # packages inside a folder too (runtime/recording)


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_domains_import_neither_the_stages_nor_the_runtime(domain):
    for path in files(domain):
        bad = {n for n in imported(path) if n.startswith(("aoai.stages", "aoai.runtime"))}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_runtime_does_not_import_the_stages():
    for path in files("runtime"):
        bad = {n for n in imported(path) if n.startswith("aoai.stages")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_stages_folder_holds_exactly_the_stages_the_stack_builds():
    stacked = {n.split(".")[2] for n in imported(PACKAGE / "stack.py") if n.startswith("aoai.stages.")}
    on_disk = {p.stem for p in files("stages") if p.stem != "__init__"}
    assert stacked == on_disk


def test_old_import_paths_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="aoai.config is deprecated"):
        config = importlib.import_module("aoai.config")
    from aoai.extension import RequestContext, SimulatorConfig, context_of

    assert (config.SimulatorConfig, config.RequestContext, config.context_of) == (
        SimulatorConfig,
        RequestContext,
        context_of,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert (
            importlib.import_module("aoai.generate").chat_response
            is importlib.import_module("aoai.extension").chat_response
        )
        assert importlib.import_module("aoai.streaming").StreamPlan.__module__ == "aoai.runtime.streams"
        with pytest.raises(AttributeError, match="no longer in the simulator"):
            importlib.import_module("aoai.routing").no_such_name  # noqa: B018
