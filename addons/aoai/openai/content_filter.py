"""Content filtering as Azure's filter reports it: rules that score a prompt or an answer per
category, the threshold a deployment blocks at, and the JSON Azure sends about it.

Azure scores four harm categories (hate, sexual, violence, self_harm) with a severity (safe,
low, medium, high) and blocks from a threshold (medium by default); jailbreak attempts (in
prompts) and protected material (in answers) are detected or not, and blocked when detected.
Here the scores come from the deployment's rules (terms or regular expressions, each with a
severity), from a seeded share of requests filtered at random, or from a header a test sends.
Rules run on RE2, whose time grows only linearly with the text whatever the pattern, so no
rule can stall the simulator on a crafted prompt (a backtracking engine takes exponential
time on `(a+)+$`); RE2 has no backreferences or lookarounds, and a rule that needs them is
refused where it is set. Pure functions and dataclasses: nothing here touches mitmproxy.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

SEVERITIES = ("safe", "low", "medium", "high")
BLOCK_AT = ("low", "medium", "high", "off")  # "off": annotate only, never block
HARM = ("hate", "self_harm", "sexual", "violence")
PROMPT, COMPLETION = "prompt", "completion"
# Categories that are detected or not (no severity), by where they apply.
DETECTED = {PROMPT: ("jailbreak",), COMPLETION: ("protected_material_code", "protected_material_text")}
CATEGORIES = {side: tuple(sorted(HARM + DETECTED[side])) for side in (PROMPT, COMPLETION)}

PROMPT_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)
IMAGE_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that "
    "is not allowed by our safety system."
)
HEADER = "x-ms-simulator-content-filter"


class FilterSpecError(ValueError):
    """A content-filter setting is wrong; the message names the field."""


# --- Rules and policies ---------------------------------------------------------------------------

# Python's \w and \s (any script) in RE2, whose own \w and \s are ASCII only. A term matches
# whole words: no word character just before or after it.
_WORD = r"\p{L}\p{N}_"
_SPACES = r"[\t-\r\x1c-\x20\x85\p{Z}]+"


RULE_MEMORY_BYTES = 1024 * 1024  # RE2's budget for one pattern: its program and its matching states


def _options(any_case: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = not any_case
    options.log_errors = False  # a refused pattern is reported where it was set, not on stderr
    # RE2's default budget (8 MiB a pattern) let each rule's compiled patterns take ~870 KiB:
    # 1,000 rules, 1.7 GiB. A rule's patterns fit in far less; one too large to fit is refused.
    options.max_mem = RULE_MEMORY_BYTES
    return options


class Text:
    """A text as the rules search it: UTF-8, as it is and in lower case, each made once."""

    def __init__(self, text: str):
        self.data = text.encode("utf-8", "surrogatepass")
        lower = text.lower()
        # Lower case keeps the offsets only when it keeps the length.
        self.lower = lower.encode("utf-8", "surrogatepass") if len(lower) == len(text) else None

    def offset(self, data: bytes, at: int) -> int:
        """The character offset of byte `at` of `data` (this text, or its lower case)."""
        return len(data[:at].decode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Rule:
    """A term or a regular expression, matched in any case.

    A rule is searched in the text's lower case where that means the same (terms, and
    regexes without capitals): a case-sensitive scan for literal text is many times faster.
    For the same reason a term is first looked for as its text alone, and the start of a word
    checked here; only when several matches start inside words ("kill" in "skill, skills")
    does the pattern with the boundary before it take over, which finds the first whole word
    in one scan. Ten terms cost about 0.02 ms on a 1,000-word prompt."""

    category: str
    severity: str  # "high" for detected categories (they have none; detected blocks)
    spec: Any  # as written, for GET /++/config
    any_case: Any  # re2 pattern, case-insensitive, for the text as it is; a term's group 1 is the term
    lowered: Any = None  # re2 pattern for the text in lower case; None: only any_case fits
    term: bool = False
    quick_any_case: Any = None  # a term without the boundary before it (found fast, its start checked here)
    quick_lowered: Any = None

    def first_match(self, text: str | Text) -> int | None:
        """The character offset where the rule first matches `text`, or None."""
        if not isinstance(text, Text):
            text = Text(text)
        if self.lowered is not None and text.lower is not None:
            exact, quick, haystack = self.lowered, self.quick_lowered, text.lower
        else:
            exact, quick, haystack = self.any_case, self.quick_any_case, text.data
        start = 0
        if quick is not None:
            for _ in range(_QUICK_TRIES):
                found = quick.search(haystack, start)
                if found is None:
                    return None
                at = found.start()
                if not _word_before(haystack, at):
                    return text.offset(haystack, at)
                start = at + 1
            start -= 1  # the exact pattern takes the character before the term with it
        found = exact.search(haystack, start)
        if found is None:
            return None
        return text.offset(haystack, found.start(1) if self.term else found.start())


_QUICK_TRIES = 8  # matches inside words a term's quick pattern may meet before the exact one takes over


def _word_before(data: bytes, at: int) -> bool:
    """Whether the character before byte `at` of UTF-8 `data` is a word character."""
    if at == 0:
        return False
    start = at - 1
    while start > 0 and 0x80 <= data[start] < 0xC0:  # back to the first byte of that character
        start -= 1
    char = data[start:at].decode("utf-8", "replace")
    return char.isalnum() or char == "_"


def _side_spec(rules: Iterable[Rule]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for rule in rules:
        out.setdefault(rule.category, []).append(rule.spec)
    return out


@dataclass(frozen=True)
class Policy:
    """A deployment's content filter: what it blocks at, its rules, its random shares."""

    block_at: str = "medium"
    prompt: tuple[Rule, ...] = ()
    completion: tuple[Rule, ...] = ()
    prompt_share: float = 0.0  # of requests whose prompt is filtered at random
    completion_share: float = 0.0  # of answers filtered at random

    @property
    def idle(self) -> bool:
        """Nothing to judge: no rules and no random share (a forcing header may still ask)."""
        return not (self.prompt or self.completion or self.prompt_share or self.completion_share)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"blockAt": self.block_at}
        if self.prompt_share or self.completion_share:
            out["randomShare"] = {PROMPT: self.prompt_share, COMPLETION: self.completion_share}
        if self.prompt:
            out[PROMPT] = _side_spec(self.prompt)
        if self.completion:
            out[COMPLETION] = _side_spec(self.completion)
        return out


DEFAULT = Policy()


# Every prompt and answer is judged by every rule of its side, and each rule is compiled when
# it is set (about 2 ms and 100 KiB a rule): both stay small.
MAX_RULES = 200
MAX_RULE_CHARS = 4096


def _rule(category: str, spec: Any, where: str) -> Rule:
    """One rule: a string is a term (whole words, any case); an object has "term" or "regex",
    and a "severity" for the harm categories (default high)."""
    if isinstance(spec, str):
        spec = {"term": spec}
    if not isinstance(spec, dict):
        raise FilterSpecError(f'{where}: expected a term or {{"term"|"regex": …, "severity": …}}')
    unknown = set(spec) - {"term", "regex", "severity"}
    if unknown:
        raise FilterSpecError(f"{where}: unknown field {sorted(unknown)[0]!r}; use term or regex, and severity")
    if ("term" in spec) == ("regex" in spec):
        raise FilterSpecError(f'{where}: give either "term" or "regex"')
    key = "term" if "term" in spec else "regex"
    value = spec[key]
    if not isinstance(value, str) or not value.strip():
        raise FilterSpecError(f"{where}.{key}: expected a non-empty string")
    if len(value) > MAX_RULE_CHARS:
        raise FilterSpecError(f"{where}.{key}: at most {MAX_RULE_CHARS} characters, got {len(value)}")
    term = key == "term"
    # Whole words for terms: "kill" does not match "skill" or "killer".
    words = _SPACES.join(re2.escape(w) for w in value.lower().split()) + f"(?:[^{_WORD}]|$)"
    source = f"(?:^|[^{_WORD}])({words})" if term else value
    quick_any_case = quick_lowered = None
    try:
        any_case = re2.compile(source, _options(any_case=True))
        lowered = re2.compile(source, _options(any_case=False)) if term or source == source.lower() else None
        if term:
            quick_any_case, quick_lowered = (re2.compile(words, _options(any_case=c)) for c in (True, False))
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise FilterSpecError(
            f"{where}.regex: not a valid regular expression ({reason}); rules use RE2 syntax, "
            "without backreferences or lookarounds"
        ) from None
    severity = spec.get("severity")
    if category in HARM:
        severity = "high" if severity is None else severity
        if severity not in SEVERITIES[1:]:
            raise FilterSpecError(f"{where}.severity: expected one of {', '.join(SEVERITIES[1:])}, got {severity!r}")
    elif severity is not None:
        raise FilterSpecError(f"{where}.severity: {category} is detected or not; it has no severity")
    else:
        severity = "high"
    written = spec[key] if set(spec) == {"term"} else spec
    return Rule(category, severity, written, any_case, lowered, term, quick_any_case, quick_lowered)


def _side(spec: Any, side: str, where: str) -> tuple[Rule, ...]:
    if not isinstance(spec, dict):
        raise FilterSpecError(f"{where}: expected an object of category to rules")
    rules: list[Rule] = []
    for category, listed in spec.items():
        if category not in CATEGORIES[side]:
            raise FilterSpecError(
                f"{where}: unknown category {category!r}; for {side}s use {', '.join(CATEGORIES[side])}"
            )
        if isinstance(listed, (str, dict)):
            listed = [listed]
        if not isinstance(listed, list):
            raise FilterSpecError(f"{where}.{category}: expected a list of rules")
        if len(rules) + len(listed) > MAX_RULES:
            raise FilterSpecError(f"{where}.{category}: at most {MAX_RULES} rules for {side}s")
        rules += [_rule(category, item, f"{where}.{category}[{i}]") for i, item in enumerate(listed)]
    return tuple(rules)


def _share(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise FilterSpecError(f"{where}: expected a number from 0 to 1, got {value!r}")
    return float(value)


def parse_policy(spec: Any, where: str) -> Policy:
    """A deployment's "contentFilter" object; raises FilterSpecError naming the field."""
    if not isinstance(spec, dict):
        raise FilterSpecError(f"{where}: expected an object with blockAt, randomShare, prompt, completion")
    unknown = set(spec) - {"blockAt", "randomShare", PROMPT, COMPLETION}
    if unknown:
        raise FilterSpecError(
            f"{where}: unknown field {sorted(unknown)[0]!r}; use blockAt, randomShare, prompt, completion"
        )
    block_at = spec.get("blockAt", "medium")
    if block_at not in BLOCK_AT:
        raise FilterSpecError(f"{where}.blockAt: expected one of {', '.join(BLOCK_AT)}, got {block_at!r}")
    shares = spec.get("randomShare", {})
    if not isinstance(shares, dict) or set(shares) - {PROMPT, COMPLETION}:
        raise FilterSpecError(
            f'{where}.randomShare: expected {{"prompt": share, "completion": share}}, each from 0 to 1'
        )
    return Policy(
        block_at,
        _side(spec.get(PROMPT, {}), PROMPT, f"{where}.{PROMPT}"),
        _side(spec.get(COMPLETION, {}), COMPLETION, f"{where}.{COMPLETION}"),
        _share(shares.get(PROMPT, 0), f"{where}.randomShare.{PROMPT}"),
        _share(shares.get(COMPLETION, 0), f"{where}.randomShare.{COMPLETION}"),
    )


# --- Verdicts -------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the filter made of one text: each category's score, and what that blocks."""

    side: str
    block_at: str = "medium"
    severities: dict[str, str] = field(default_factory=dict)  # harm categories scored above safe
    detected: set[str] = field(default_factory=set)
    cut_at: int | None = None  # where the first blocking match starts (None: no match told where)

    def filters(self, category: str) -> bool:
        if self.block_at == "off":
            return False
        if category in HARM:
            severity = self.severities.get(category, "safe")
            return severity != "safe" and SEVERITIES.index(severity) >= SEVERITIES.index(self.block_at)
        return category in self.detected

    @property
    def filtered(self) -> list[str]:
        """The categories that block, in Azure's (alphabetical) order."""
        return [c for c in CATEGORIES[self.side] if self.filters(c)]

    @property
    def blocked(self) -> bool:
        return bool(self.filtered)

    @property
    def scored(self) -> bool:
        """Anything above safe: the results then differ from the all-safe defaults."""
        return bool(self.severities or self.detected)

    def score(self, category: str, severity: str = "high", at: int | None = None) -> None:
        """Note a category (a higher severity wins); `at` is where its text starts."""
        if category in HARM:
            if SEVERITIES.index(severity) > SEVERITIES.index(self.severities.get(category, "safe")):
                self.severities[category] = severity
        else:
            self.detected.add(category)
        if at is not None and self.filters(category):
            self.cut_at = at if self.cut_at is None else min(self.cut_at, at)

    def results(self) -> dict[str, dict[str, Any]]:
        """`content_filter_results` as Azure reports them for this side."""
        out: dict[str, dict[str, Any]] = {}
        for category in CATEGORIES[self.side]:
            if category in HARM:
                out[category] = {"filtered": self.filters(category), "severity": self.severities.get(category, "safe")}
            else:
                out[category] = {"filtered": self.filters(category), "detected": category in self.detected}
        return out


def judge(rules: Iterable[Rule], text: str, side: str, block_at: str = "medium") -> Verdict:
    """Score `text` against the rules of one side."""
    verdict = Verdict(side, block_at)
    searched = None
    for rule in rules:
        searched = searched or Text(text)
        at = rule.first_match(searched)
        if at is not None:
            verdict.score(rule.category, rule.severity, at)
    return verdict


def random_category(rng: random.Random) -> str:
    """The category a randomly filtered text is reported under: a harm category (at high)."""
    return rng.choice(HARM)


class Dice:
    """The random share's draws: one sequence per deployment and side, seeded when the
    simulator is, so a seeded run filters the same requests in the same order."""

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._streams: dict[tuple[str, str], random.Random] = {}

    def stream(self, deployment: str, side: str) -> random.Random:
        key = (deployment, side)
        rng = self._streams.get(key)
        if rng is None:
            rng = self._streams[key] = (
                random.Random(f"{self.seed}:{deployment}:{side}") if self.seed is not None else random.Random()
            )
        return rng

    def hit(self, deployment: str, side: str, share: float) -> str | None:
        """The category to filter under, for the share of draws that hit; else None."""
        if share <= 0:
            return None
        rng = self.stream(deployment, side)
        return random_category(rng) if rng.random() < share else None


# --- The forcing header ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Forced:
    """What `x-ms-simulator-content-filter` asks for: (category, severity) per side."""

    prompt: tuple[tuple[str, str], ...] = ()
    completion: tuple[tuple[str, str], ...] = ()


def parse_forced(value: str) -> Forced:
    """`prompt=violence:high, completion=hate` (severity defaults to high; jailbreak and the
    protected materials take none). Raises FilterSpecError saying what is wrong."""
    sides: dict[str, list[tuple[str, str]]] = {PROMPT: [], COMPLETION: []}
    for item in re.split(r"[,;]", value):
        item = item.strip()
        if not item:
            continue
        side, sep, what = item.partition("=")
        side, what = side.strip().lower(), what.strip().lower()
        if not sep or side not in sides:
            raise FilterSpecError(
                f"{HEADER}: {item!r}: expected prompt=CATEGORY[:SEVERITY] or completion=CATEGORY[:SEVERITY]"
            )
        category, _, severity = (p.strip() for p in what.partition(":"))
        if category not in CATEGORIES[side]:
            raise FilterSpecError(f"{HEADER}: unknown {side} category {category!r}; use {', '.join(CATEGORIES[side])}")
        if category in HARM:
            severity = severity or "high"
            if severity not in SEVERITIES:
                raise FilterSpecError(f"{HEADER}: severity {severity!r}; use {', '.join(SEVERITIES)}")
        elif severity:
            raise FilterSpecError(f"{HEADER}: {category} is detected or not; it takes no severity")
        sides[side].append((category, severity or "high"))
    return Forced(tuple(sides[PROMPT]), tuple(sides[COMPLETION]))


# --- Answers: what a filtered answer keeps --------------------------------------------------------


@dataclass
class AnswerFilter:
    """How one request's answers are judged: the deployment's answer rules, and a verdict
    already decided for every answer (a random draw or the forcing header)."""

    rules: tuple[Rule, ...] = ()
    block_at: str = "medium"
    preset: tuple[tuple[str, str], ...] = ()  # (category, severity) every answer gets

    def judge(self, text: str) -> Verdict:
        verdict = judge(self.rules, text, COMPLETION, self.block_at)
        for category, severity in self.preset:
            verdict.score(category, severity)
        return verdict


def kept_ids(token_ids: list[int], text: str, verdict: Verdict, encode: Callable[[str], list[int]]) -> list[int]:
    """The tokens a blocked answer keeps: those before the match that blocked it, or, when
    nothing in the text told where (a random or forced verdict), the first half."""
    if verdict.cut_at is None:
        return token_ids[: len(token_ids) // 2]
    return encode(text[: verdict.cut_at].rstrip()) if verdict.cut_at else []


# --- Prompts: the texts a request's prompt is judged on -------------------------------------------


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def chat_texts(body: dict[str, Any]) -> list[str]:
    """A chat request's prompt: its messages' text, as one prompt (prompt_index 0)."""
    return ["\n".join(_content_text(m.get("content")) for m in body.get("messages") or () if isinstance(m, dict))]


def completion_texts(body: dict[str, Any]) -> list[str]:
    """A completions request's prompts, each judged alone (token-array prompts hold no text here)."""
    prompt = body.get("prompt", "")
    prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else list(prompt)
    return [p if isinstance(p, str) else "" for p in prompts]


def responses_texts(body: dict[str, Any]) -> list[str]:
    """A Responses request's prompt: its instructions and this input."""
    raw = body.get("input")
    items = [{"content": raw}] if isinstance(raw, str) else raw or []
    parts = [body.get("instructions") or ""]
    for item in items:
        if isinstance(item, dict):
            parts.append(_content_text(item.get("content")) or str(item.get("output") or ""))
    return ["\n".join(p for p in parts if p)]


def image_texts(body: dict[str, Any]) -> list[str]:
    prompt = body.get("prompt") if isinstance(body, dict) else None
    return [prompt if isinstance(prompt, str) else ""]


# --- Azure's bodies -------------------------------------------------------------------------------


def prompt_error(verdict: Verdict) -> dict[str, Any]:
    """The 400 a blocked prompt gets (chat, completions, Responses)."""
    return {
        "error": {
            "message": PROMPT_MESSAGE,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": verdict.results()},
        }
    }


def image_error(verdict: Verdict) -> dict[str, Any]:
    """The 400 a blocked image prompt gets: image generation words it its own way."""
    results = verdict.results()
    results["profanity"] = {"filtered": False, "detected": False}
    return {
        "error": {
            "code": "content_policy_violation",
            "message": IMAGE_MESSAGE,
            "type": "invalid_request_error",
            "inner_error": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_results": dict(sorted(results.items())),
            },
        }
    }
