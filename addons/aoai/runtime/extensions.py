"""Extensions: user code named by EXTENSION_PATH, imported as modules of their own.

The `Extensions` stage places each as a mitmproxy addon and calls its `initialize(config)`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from .config import ConfigError


def extensions_paths(value: str) -> list[str]:
    """EXTENSION_PATH: paths separated by commas or the OS path separator."""
    return [p.strip() for p in re.split(rf"[,{re.escape(os.pathsep)}]", value) if p.strip()]


def import_extension(path: str) -> ModuleType:
    """Import a `.py` file or a package folder under a name of its own; ConfigError if it
    cannot be, naming the path."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        init = target / "__init__.py"
        if not init.is_file():
            raise ConfigError(f"EXTENSION_PATH: {path}: a folder needs an __init__.py to be an extension package")
        spec = importlib.util.spec_from_file_location(
            f"aoai_ext_{_name(target)}", init, submodule_search_locations=[str(target)]
        )
    elif target.is_file():
        spec = importlib.util.spec_from_file_location(f"aoai_ext_{_name(target)}", target)
    else:
        raise ConfigError(f"EXTENSION_PATH: {path}: no such file or folder")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(spec.name, None)
        raise ConfigError(f"EXTENSION_PATH: {path}: cannot load it: {describe_error(e)}") from None
    if not getattr(module, "name", None):
        module.name = f"extension:{target}"  # type: ignore[attr-defined]  # mitmproxy names addons by this
    return module


def _name(path: Path) -> str:
    return re.sub(r"\W", "_", path.stem)


def describe_error(e: BaseException) -> str:
    where = ""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" (line {tb.tb_lineno})"
    return f"{type(e).__name__}: {e}{where}"
