"""The layout shows the design: imports point one way, there is no import circle, and the
stack (stack.py) lists the stages folder exactly."""

import ast
import importlib
import importlib.util
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "addons" / "aoai"
DOMAINS = ("openai", "docintel")


def imported(path: Path, type_only: bool = False) -> set[str]:
    """The aoai modules a file imports at run time (with `type_only`, those under
    TYPE_CHECKING too)."""
    package = ".".join(path.relative_to(PACKAGE.parent).parts[:-1])
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not type_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
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


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every aoai module and the aoai modules it imports, type-only imports included (a name
    imported from a module counts as that module)."""
    modules = {module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for n in imported(path, type_only=True):
            while n not in modules and "." in n:
                n = n.rpartition(".")[0]
            # A module's own packages are imported before it in any case (`from . import x`
            # names one), so they add no edge of their own.
            if n in modules and n != name and not name.startswith(n + "."):
                found.add(n)
        graph[name] = found
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_domains_import_neither_the_stages_nor_the_runtime(domain):
    for path in files(domain):
        bad = {n for n in imported(path) if n.startswith(("aoai.stages", "aoai.runtime"))}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_runtime_imports_neither_the_stages_nor_the_generators():
    for path in files("runtime"):
        bad = {n for n in imported(path, type_only=True) if n.startswith(("aoai.stages", "aoai.generators"))}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_generators_do_not_import_the_stages():
    for path in files("generators"):
        bad = {n for n in imported(path, type_only=True) if n.startswith("aoai.stages")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_no_stage_imports_another():
    for path in files("stages"):
        bad = {n for n in imported(path, type_only=True) if n.startswith("aoai.stages")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_no_import_circle_anywhere_type_only_imports_included():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


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
