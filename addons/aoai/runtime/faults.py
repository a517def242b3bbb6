"""Declared faults: what goes wrong on a deployment and how often, as plain logic.

A fault profile is a list of faults, each with its kind, its `share` (the chance, 0 to 1,
that it strikes a request) and its parameters. It comes from a deployment's `faults` in the
deployments file, or from the `"*"` entry for every deployment that declares none, and
changes at run time through `PATCH /++/config`. Every request draws once per fault from a
random generator of its deployment, made from the seed and the deployment's name: the same
seed and the same sequence of requests give the same faults, so a failing test replays.

Nothing here touches mitmproxy or holds state: the draws, quota cuts and counts are kept in
the fault book (runtime/fault_book.py); the fault stages (stages/faults.py) apply the choices.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .streams import StreamPlan

# Kinds that answer the request themselves, instead of the generator or the recording.
ANSWERS = ("500", "503", "timeout", "hang", "contextLength")
# Kinds that change how an answer leaves (its timing, or a stream's end).
SHAPES = ("slowFirstByte", "trickle", "streamCut")
QUOTA_CUT = "quotaCut"
KINDS = ANSWERS + SHAPES + (QUOTA_CUT,)

# Each kind's own fields (besides kind and share).
_FIELDS: dict[str, frozenset[str]] = {
    "500": frozenset({"retryAfter"}),
    "503": frozenset({"retryAfter"}),
    "timeout": frozenset({"status", "afterMs"}),
    "hang": frozenset({"maxS"}),
    "contextLength": frozenset(),
    "slowFirstByte": frozenset({"ms"}),
    "trickle": frozenset({"factor"}),
    "streamCut": frozenset({"afterTokens", "afterMs"}),
    QUOTA_CUT: frozenset({"tokensPerMinute", "forS", "everyS"}),
}
HANG_MAX_S = 600.0  # a hung request answers 408 after this long (10 minutes) unless maxS says otherwise
# The largest values accepted: far beyond any useful test, small enough that every sum and
# sleep made of them stays finite (whole numbers fit a signed 64-bit integer).
MAX_FAULTS = 100  # in one profile: every request draws once per fault
MAX_MS = 3_600_000  # afterMs, ms: an hour
MAX_SECONDS = 30 * 86_400  # maxS, forS, everyS: thirty days
MAX_FACTOR = 1000  # trickle
MAX_WHOLE = 2**63 - 1


class FaultError(ValueError):
    """A fault declaration is wrong; the message names the field."""


@dataclass(frozen=True)
class Fault:
    kind: str
    share: float = 0.0  # chance per request; quota cuts with everyS have none
    retry_after_s: int | None = None  # 500, 503: the retry-after header
    status: int = 408  # timeout: 408 or 504
    after_s: float | None = None  # timeout: when it answers; streamCut: when the stream breaks
    after_tokens: int | None = None  # streamCut: token frames sent before the break
    max_s: float = HANG_MAX_S  # hang: the longest it waits before its 408
    delay_s: float = 0.0  # slowFirstByte
    factor: float = 1.0  # trickle: gaps between tokens (whole wait, for answers sent at once) times this
    tokens_per_minute: int = 0  # quotaCut: the quota while the cut lasts
    for_s: float = 0.0  # quotaCut: how long a cut lasts
    every_s: float | None = None  # quotaCut: a cut at the start of every period this long
    spec: dict[str, Any] = field(default_factory=dict, compare=False)  # as declared, for views

    def to_json(self) -> dict[str, Any]:
        return dict(self.spec)


@dataclass(frozen=True, eq=False)
class FaultProfile:
    """What goes wrong on one deployment (or by default). Compared by identity: a new profile
    (a changed deployments file, a PATCH) starts its draws afresh."""

    faults: tuple[Fault, ...] = ()
    since: float = field(default_factory=time.monotonic)  # when declared: periodic quota cuts count from it

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.faults]


# --- Parsing --------------------------------------------------------------------------------


def _number(
    where: str,
    value: Any,
    low: float,
    high: float | None = None,
    *,
    above: bool = False,
    whole: bool = False,
    cap: float | None = None,
) -> float:
    """A number from `low` to `high` (the range the field means), no larger than `cap` (a
    sanity limit, far beyond any useful value); raises FaultError naming `where`."""
    kind = "a whole number" if whole else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        bad = True
    else:
        bad = value <= low if above else value < low
        bad = bad or (high is not None and value > high) or (whole and int(value) != value)
        if not bad and cap is not None and value > cap:
            raise FaultError(f"{where}: expected {kind} of at most {_plain(cap)}, got {_shown(value)}")
    if bad:
        span = (
            f"from {_plain(low)} to {_plain(high)}"
            if high is not None
            else (f"above {_plain(low)}" if above else f"of at least {_plain(low)}")
        )
        raise FaultError(f"{where}: expected {kind} {span}, got {_shown(value)}")
    return int(value) if whole else float(value)


def _plain(number: float) -> str:
    return str(int(number)) if number == int(number) else f"{number:g}"


def _shown(value: Any) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def parse_fault(spec: Any, where: str) -> Fault:
    """One entry of a `faults` list; `where` (e.g. `deployments.json: gpt-4o.faults[2]`)
    prefixes every error message."""
    if not isinstance(spec, dict):
        raise FaultError(f'{where}: expected an object such as {{"kind": "503", "share": 0.1}}')
    kind = spec.get("kind")
    if kind not in _FIELDS:
        raise FaultError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {json.dumps(kind)}")
    allowed = _FIELDS[kind] | {"kind", "share"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        own = ", ".join(sorted(_FIELDS[kind])) or "no other"
        raise FaultError(f"{where}.{unknown[0]}: unknown field for kind {kind} (it takes share and {own})")
    args: dict[str, Any] = {"kind": kind, "spec": dict(spec)}
    every = kind == QUOTA_CUT and "everyS" in spec
    if every:
        if "share" in spec:
            raise FaultError(f"{where}.share: a quotaCut takes either share or everyS, not both")
        args["every_s"] = _number(f"{where}.everyS", spec["everyS"], 0, cap=MAX_SECONDS, above=True)
    elif "share" not in spec:
        raise FaultError(f"{where}.share: required, a number from 0 to 1 (the share of requests it strikes)")
    else:
        args["share"] = _number(f"{where}.share", spec["share"], 0, 1)
    if kind in ("500", "503"):
        if "retryAfter" in spec:
            args["retry_after_s"] = _number(f"{where}.retryAfter", spec["retryAfter"], 0, 3600, whole=True)
        elif kind == "503":
            args["retry_after_s"] = 1
    elif kind == "timeout":
        status = spec.get("status", 408)
        if status not in (408, 504) or isinstance(status, bool):
            raise FaultError(f"{where}.status: expected 408 or 504, got {json.dumps(status)}")
        args["status"] = status
        if "afterMs" not in spec:
            raise FaultError(f"{where}.afterMs: required, the milliseconds before the timeout answers")
        args["after_s"] = _number(f"{where}.afterMs", spec["afterMs"], 0, cap=MAX_MS) / 1000
    elif kind == "hang":
        args["max_s"] = _number(f"{where}.maxS", spec.get("maxS", HANG_MAX_S), 0, cap=MAX_SECONDS, above=True)
    elif kind == "slowFirstByte":
        if "ms" not in spec:
            raise FaultError(f"{where}.ms: required, the milliseconds added before the first byte")
        args["delay_s"] = _number(f"{where}.ms", spec["ms"], 0, cap=MAX_MS) / 1000
    elif kind == "trickle":
        if "factor" not in spec:
            raise FaultError(f"{where}.factor: required, how many times slower the tokens come (at least 1)")
        args["factor"] = _number(f"{where}.factor", spec["factor"], 1, cap=MAX_FACTOR)
    elif kind == "streamCut":
        if ("afterTokens" in spec) == ("afterMs" in spec):
            raise FaultError(f"{where}: a streamCut takes afterTokens or afterMs (one of them)")
        if "afterTokens" in spec:
            args["after_tokens"] = _number(f"{where}.afterTokens", spec["afterTokens"], 0, cap=MAX_WHOLE, whole=True)
        else:
            args["after_s"] = _number(f"{where}.afterMs", spec["afterMs"], 0, cap=MAX_MS) / 1000
    elif kind == QUOTA_CUT:
        for name in ("tokensPerMinute", "forS"):
            if name not in spec:
                raise FaultError(f"{where}.{name}: required for a quotaCut")
        args["tokens_per_minute"] = _number(
            f"{where}.tokensPerMinute", spec["tokensPerMinute"], 1, cap=MAX_WHOLE, whole=True
        )
        args["for_s"] = _number(f"{where}.forS", spec["forS"], 0, cap=MAX_SECONDS, above=True)
    return Fault(**args)


def parse_profile(value: Any, where: str) -> FaultProfile:
    """A `faults` list (`where` names it, e.g. `deployments.json: gpt-4o.faults`)."""
    if not isinstance(value, list):
        raise FaultError(f'{where}: expected a list of faults such as [{{"kind": "503", "share": 0.1}}]')
    if len(value) > MAX_FAULTS:
        raise FaultError(f"{where}: at most {MAX_FAULTS} faults, got {len(value)}")
    return FaultProfile(tuple(parse_fault(spec, f"{where}[{i}]") for i, spec in enumerate(value)))


# --- Choosing --------------------------------------------------------------------------------


def draw(profile: FaultProfile, rng: random.Random) -> list[Fault]:
    """The faults that strike one request: one draw per fault with a share, in order, whether
    or not it strikes, so each fault's chance is its own share and the sequence stays the
    same for the same requests. Share 0 never strikes (random() < 0 is false), share 1
    always does (random() is below 1)."""
    hits = []
    for fault in profile.faults:
        if fault.every_s is None and rng.random() < fault.share:
            hits.append(fault)
    return hits


@dataclass
class Choice:
    """What struck one request: at most one fault that answers it, and the shapes."""

    answer: Fault | None = None
    shapes: list[Fault] = field(default_factory=list)


def split(hits: list[Fault]) -> Choice:
    choice = Choice()
    for fault in hits:
        if fault.kind in ANSWERS:
            choice.answer = choice.answer or fault  # the first declared wins
        elif fault.kind in SHAPES:
            choice.shapes.append(fault)
    return choice


# --- Shaping answers --------------------------------------------------------------------------


def shape_stream(plan: StreamPlan, shapes: list[Fault]) -> list[str]:
    """Apply slow first bytes, trickles and cuts to a paced stream's plan; returns the kinds
    that changed it. Times are seconds from arrival; a cut drops the connection after its
    last frame, with no end of body and no [DONE], as a network fault does."""
    applied = []
    frames = plan.frames
    tokens = plan.token_frames or [True] * len(frames)
    for fault in shapes:
        if fault.kind == "slowFirstByte" and fault.delay_s > 0:
            plan.head_delay_s += fault.delay_s
            frames = [(due + fault.delay_s, data) for due, data in frames]
            applied.append(fault.kind)
        elif fault.kind == "trickle" and fault.factor != 1:
            first = next((frames[i][0] for i, t in enumerate(tokens) if t), None)
            if first is not None:
                frames = [(due if due <= first else first + (due - first) * fault.factor, data) for due, data in frames]
                applied.append(fault.kind)
    for fault in shapes:
        if fault.kind != "streamCut" or plan.cut:
            continue
        if fault.after_tokens is not None:
            keep, seen = len(frames), 0
            for i, carries in enumerate(tokens):
                if carries:
                    if seen == fault.after_tokens:
                        keep = i
                        break
                    seen += 1
            if keep == len(frames):
                continue  # the answer ends before the cut
            frames, tokens = frames[:keep], tokens[:keep]
        else:
            after_s = fault.after_s if fault.after_s is not None else 0.0  # the profile sets one of the two
            keep = sum(1 for due, _ in frames if due < after_s)
            if keep == len(frames):
                continue
            # An empty last frame at the cut's time: the connection drops then, not at the last frame.
            frames, tokens = frames[:keep] + [(after_s, b"")], tokens[:keep] + [False]
        plan.cut = True
        applied.append(fault.kind)
    plan.frames = frames
    if plan.token_frames is not None or plan.cut:
        plan.token_frames = tokens
    return applied


def shape_wait(seconds: float, shapes: list[Fault]) -> tuple[float, list[str]]:
    """An answer sent at once after `seconds`: a slow first byte adds its delay, a trickle
    multiplies the wait (its tokens would have come that much slower). Stream cuts do not apply."""
    applied = []
    for fault in shapes:
        if fault.kind == "trickle" and fault.factor != 1 and seconds > 0:
            seconds *= fault.factor
            applied.append(fault.kind)
    for fault in shapes:
        if fault.kind == "slowFirstByte" and fault.delay_s > 0:
            seconds += fault.delay_s
            applied.append(fault.kind)
    return seconds, applied
