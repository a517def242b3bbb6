"""Options: how a stage declares the settings it owns.

Each setting is a mitmproxy option of a real type (what `--set` and mitmweb's options editor
show) whose default is its environment variable, read through the one table here: the
variable is the option's name in upper case, its text parsed by the option's type (`PARSERS`)
or by the option's own `parse`. A stage lists its `Option`s, declares them in `load()` with
`declare` and checks changed values in `configure()` with `check`; both raise or return
`ConfigError` naming the environment variable, in one line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import internals
from .config import ConfigError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})

STRINGS = Sequence[str]


@dataclass(frozen=True)
class Option:
    env: str  # the environment variable; the option is its name in lower case
    typespec: Any  # int, float, bool, str, int | None, str | None or Sequence[str]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # numbers: the smallest accepted
    high: float | None = None  # numbers: the largest accepted
    parse: Callable[[str], Any] | None = None  # the environment's text -> the value, when the type's is not enough
    check: Callable[[Any], object] | None = None  # more than type, choices and range; raises ConfigError

    @property
    def name(self) -> str:
        return self.env.lower()

    def from_text(self, text: str) -> Any:
        """The value an environment variable (or `--set` on the command line) gives as text."""
        if self.parse is not None:
            return self.parse(text)
        if text.strip() == "" and self.typespec in (int, float):
            return self.default  # set but empty: not set
        return PARSERS[self.typespec](self.env, text)

    def checked(self, value: Any) -> Any:
        """`value` if this option takes it; raises ConfigError naming the variable."""
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.env}: expected {_either(self.choices)}, got {_quoted(value)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{self.env}: expected a number, got {value!r}")
            if self.low is not None and value < self.low:
                raise ConfigError(f"{self.env}: must not be below {self.low:g}, got {value:g}")
            if self.high is not None and value > self.high:
                raise ConfigError(f"{self.env}: must not be above {self.high:g}, got {value:g}")
        if self.check is not None:
            self.check(value)
        return value


def _either(choices: Sequence[str]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def text_bool(env: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in TRUE | FALSE:
        raise ConfigError(f"{env}: expected true or false, got {text!r}")
    return value in TRUE


def text_number(env: str, text: str) -> float:
    try:
        value = float(text.strip().replace("_", ""))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{env}: expected a number, got {text!r}")
    return value


def text_whole(env: str, text: str) -> int:
    value = text_number(env, text)
    if value != int(value):
        raise ConfigError(f"{env}: expected a whole number, got {text!r}")
    return int(value)


def text_optional_whole(env: str, text: str) -> int | None:
    return None if text.strip() == "" else text_whole(env, text)


def text_optional(env: str, text: str) -> str | None:
    return text.strip() or None


def text_list(env: str, text: str) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


# The one mapping from an environment variable's text to an option's value, by the option's type.
PARSERS: dict[Any, Callable[[str, str], Any]] = {
    bool: text_bool,
    int: text_whole,
    float: text_number,
    str: lambda env, text: text,
    int | None: text_optional_whole,
    str | None: text_optional,
    STRINGS: text_list,
}


def environment_value(option: Option, environ: Mapping[str, str] = os.environ) -> Any:
    """The option's default: its environment variable's value, checked, else the declared one."""
    text = environ.get(option.env)
    return option.default if text is None else option.checked(option.from_text(text))


def declare(loader: Any, options: Iterable[Option], environ: Mapping[str, str] = os.environ) -> str | None:
    """Add the options, each defaulting to its environment variable. Returns the first
    environment value that is wrong (its option keeps the declared default meanwhile), for the
    stage to refuse at start-up."""
    error = None
    for option in options:
        try:
            default = environment_value(option, environ)
        except ConfigError as e:
            error = error or str(e)
            default = option.default
        error = _command_line(option, loader) or error
        loader.add_option(option.name, option.typespec, default, f"{option.help} (env {option.env})", option.choices)
    return error


def _command_line(option: Option, loader: Any) -> str | None:
    """`--set name=text` for a float option: mitmproxy parses command-line text for str, int,
    bool and sequence options only, so the text waiting for this option is parsed here, as
    its environment variable's would be. Returns the error, if the text is wrong."""
    if option.typespec is not float:
        return None
    text = internals.deferred_text(loader, option.name)
    if text is None:
        return None
    try:
        internals.set_deferred(loader, option.name, option.checked(option.from_text(text)))
    except ConfigError as e:
        internals.set_deferred(loader, option.name, None)
        return str(e)
    return None


def check(values: Any, options: Iterable[Option], updated: set[str]) -> None:
    """Check the updated options' current values; raises ConfigError naming the variable."""
    for option in options:
        if option.name in updated:
            option.checked(getattr(values, option.name))


def names(options: Iterable[Option]) -> frozenset[str]:
    return frozenset(o.name for o in options)
