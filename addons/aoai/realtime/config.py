"""A realtime session's configuration: `session.update` (and a response's overrides) read in
the preview (beta) shape or the GA shape, checked as the service checks them, and written
back in the same shape for `session.created` / `session.updated`.

Checks raise `Invalid` with the message, param and code of OpenAI's realtime errors; the
session keeps its old configuration then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..openai.validation import Invalid
from . import audio

BETA, GA = "beta", "ga"
# Formats by their GA object type.
GA_FORMATS = {"audio/pcm": audio.PCM16, "audio/pcmu": audio.ULAW, "audio/pcma": audio.ALAW}
BETA_TO_GA = {v: k for k, v in GA_FORMATS.items()}
TOOL_CHOICES = ("auto", "none", "required")
EAGERNESS = ("low", "medium", "high", "auto")
# semantic_vad waits for the speaker to finish a thought: modelled as a silence as long as its eagerness asks.
EAGER_SILENCE_MS = {"low": 800, "medium": 500, "auto": 500, "high": 250}
NOISE_REDUCTIONS = ("near_field", "far_field")
MAX_TOKENS = 4096
SESSION_TYPES = ("realtime", "transcription")


@dataclass(frozen=True)
class TurnDetection:
    type: str = "server_vad"  # or semantic_vad
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500  # OpenAI's default (Azure's reference says 200)
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str = "auto"

    @property
    def silence_ms(self) -> int:
        return self.silence_duration_ms if self.type == "server_vad" else EAGER_SILENCE_MS[self.eagerness]

    def shape(self) -> dict[str, Any]:
        both = {
            "type": self.type,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }
        if self.type == "semantic_vad":
            return {**both, "eagerness": self.eagerness}
        return {
            **both,
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True)
class SessionConfig:
    type: str = "realtime"  # GA: realtime or transcription
    modalities: tuple[str, ...] = ("text", "audio")
    instructions: str = ""
    voice: str = "alloy"
    input_format: str = audio.PCM16
    output_format: str = audio.PCM16
    speed: float = 1.0
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] = "auto"
    temperature: float = 0.8
    max_output_tokens: int | str = "inf"

    @property
    def speaks(self) -> bool:
        return "audio" in self.modalities

    @property
    def token_limit(self) -> int | None:
        return self.max_output_tokens if isinstance(self.max_output_tokens, int) else None


def initial(flavour: str) -> SessionConfig:
    # GA sessions answer in audio only unless asked for text; preview ones in both.
    return SessionConfig(modalities=("audio",)) if flavour == GA else SessionConfig()


# --- Reading ---------------------------------------------------------------------------------


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(
            f"Invalid type for '{param}': expected an object, but got {_kind(value)} instead.", param, "invalid_type"
        )
    return value


def _kind(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a decimal",
        str: "a string",
        list: "an array",
        dict: "an object",
    }
    return "null" if value is None else names.get(type(value), "a value")


def _choice(value: Any, param: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(f"'{a}'" for a in allowed)
        raise Invalid(f"Invalid value: '{value}'. Supported values are: {listed}.", param, "invalid_value")
    return value


def _number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(
            f"Invalid type for '{param}': expected a decimal, but got {_kind(value)} instead.", param, "invalid_type"
        )
    if value < low:
        raise Invalid(
            f"Invalid '{param}': decimal below minimum value. Expected a value >= {low}, but got {value} instead.",
            param,
            "decimal_below_min_value",
        )
    if value > high:
        raise Invalid(
            f"Invalid '{param}': decimal above maximum value. Expected a value <= {high}, but got {value} instead.",
            param,
            "decimal_above_max_value",
        )
    return float(value)


def _whole(value: Any, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(
            f"Invalid type for '{param}': expected an integer, but got {_kind(value)} instead.", param, "invalid_type"
        )
    if not low <= value <= high:
        raise Invalid(
            f"Invalid '{param}': integer out of range. Expected a value between {low} and {high}, but got {value} instead.",
            param,
            "integer_out_of_range",
        )
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(
            f"Invalid type for '{param}': expected a boolean, but got {_kind(value)} instead.", param, "invalid_type"
        )
    return value


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise Invalid(
            f"Invalid type for '{param}': expected a string, but got {_kind(value)} instead.", param, "invalid_type"
        )
    return value


def _unknown(body: dict[str, Any], known: set[str], prefix: str) -> None:
    for name in body:
        if name not in known:
            raise Invalid(f"Unknown parameter: '{prefix}.{name}'.", f"{prefix}.{name}", "unknown_parameter")


def _beta_format(value: Any, param: str) -> str:
    return _choice(value, param, audio.FORMATS)


def _ga_format(value: Any, param: str) -> str:
    shape = _object(value, param)
    kind = _choice(shape.get("type"), f"{param}.type", tuple(GA_FORMATS))
    if kind == "audio/pcm" and "rate" in shape and shape["rate"] != audio.RATE:
        raise Invalid(
            f"Invalid value: '{shape['rate']}'. Supported values are: '{audio.RATE}'.", f"{param}.rate", "invalid_value"
        )
    return GA_FORMATS[kind]


def _turn_detection(value: Any, param: str, current: TurnDetection | None) -> TurnDetection | None:
    if value is None:
        return None
    shape = _object(value, param)
    _unknown(
        shape,
        {
            "type",
            "threshold",
            "prefix_padding_ms",
            "silence_duration_ms",
            "create_response",
            "interrupt_response",
            "eagerness",
            "idle_timeout_ms",
        },
        param,
    )
    kind = _choice(shape.get("type", "server_vad"), f"{param}.type", ("server_vad", "semantic_vad"))
    base = current if current is not None and current.type == kind else TurnDetection(type=kind)
    changes: dict[str, Any] = {}
    if "threshold" in shape:
        changes["threshold"] = _number(shape["threshold"], f"{param}.threshold", 0.0, 1.0)
    if "prefix_padding_ms" in shape:
        changes["prefix_padding_ms"] = _whole(shape["prefix_padding_ms"], f"{param}.prefix_padding_ms", 0, 10_000)
    if "silence_duration_ms" in shape:
        changes["silence_duration_ms"] = _whole(shape["silence_duration_ms"], f"{param}.silence_duration_ms", 0, 10_000)
    for flag in ("create_response", "interrupt_response"):
        if flag in shape:
            changes[flag] = _bool(shape[flag], f"{param}.{flag}")
    if "eagerness" in shape:
        changes["eagerness"] = _choice(shape["eagerness"], f"{param}.eagerness", EAGERNESS)
    return dataclasses.replace(base, **changes)


def _transcription(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    shape = _object(value, param)
    _unknown(shape, {"model", "language", "prompt"}, param)
    for name in shape:
        if shape[name] is not None:
            _string(shape[name], f"{param}.{name}")
    return {
        "model": shape.get("model", "whisper-1"),
        "language": shape.get("language"),
        "prompt": shape.get("prompt", ""),
    }


def _noise_reduction(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    shape = _object(value, param)
    return {"type": _choice(shape.get("type"), f"{param}.type", NOISE_REDUCTIONS)}


def _tools(value: Any, param: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        raise Invalid(
            f"Invalid type for '{param}': expected an array, but got {_kind(value)} instead.", param, "invalid_type"
        )
    tools = []
    for i, tool in enumerate(value):
        shape = _object(tool, f"{param}[{i}]")
        _choice(shape.get("type", "function"), f"{param}[{i}].type", ("function",))
        name = shape.get("name")
        if not isinstance(name, str) or not name:
            raise Invalid(
                f"Missing required parameter: '{param}[{i}].name'.", f"{param}[{i}].name", "missing_required_parameter"
            )
        parameters = shape.get("parameters", {"type": "object", "properties": {}})
        _object(parameters, f"{param}[{i}].parameters")
        tools.append(
            {"type": "function", "name": name, "description": shape.get("description", ""), "parameters": parameters}
        )
    return tuple(tools)


def _tool_choice(value: Any, param: str, tools: tuple[dict[str, Any], ...]) -> str | dict[str, Any]:
    if isinstance(value, str):
        return _choice(value, param, TOOL_CHOICES)
    shape = _object(value, param)
    _choice(shape.get("type"), f"{param}.type", ("function",))
    name = _string(shape.get("name"), f"{param}.name")
    if name not in {t["name"] for t in tools}:
        raise Invalid(f"Tool choice '{name}' is not one of the session's tools.", f"{param}.name", "invalid_value")
    return {"type": "function", "name": name}


def _max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    return _whole(value, param, 1, MAX_TOKENS)


def _voice(value: Any, param: str, current: SessionConfig, audio_sent: bool) -> str:
    voice = _string(value, param)
    if voice not in audio.VOICES:
        _choice(voice, param, audio.VOICES)
    if audio_sent and voice != current.voice:
        raise Invalid(
            "Cannot update a conversation's voice if assistant audio is present.", param, "cannot_update_voice"
        )
    return voice


def _modalities(value: Any, param: str, flavour: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(
            f"Invalid type for '{param}': expected an array, but got {_kind(value)} instead.", param, "invalid_type"
        )
    chosen = tuple(_choice(m, f"{param}[{i}]", ("text", "audio")) for i, m in enumerate(value))
    if flavour == GA:
        if len(set(chosen)) != 1:
            raise Invalid(f"Invalid '{param}': expected exactly one of 'text' or 'audio'.", param, "invalid_value")
        return chosen[:1]
    if set(chosen) == {"audio"}:
        raise Invalid(
            f"Invalid modalities: {list(chosen)}. Supported combinations are: ['text'] and ['audio', 'text'].",
            param,
            "invalid_value",
        )
    return ("text", "audio") if "audio" in chosen else ("text",)


BETA_FIELDS = {
    "modalities",
    "instructions",
    "voice",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "turn_detection",
    "tools",
    "tool_choice",
    "temperature",
    "max_response_output_tokens",
    "model",
    "speed",
    "tracing",
    "id",
    "object",
    "expires_at",
    "include",
    "client_secret",
}
GA_FIELDS = {
    "type",
    "model",
    "output_modalities",
    "instructions",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "temperature",
    "tracing",
    "truncation",
    "prompt",
    "include",
    "id",
    "object",
    "expires_at",
}


def update(current: SessionConfig, body: Any, flavour: str, audio_sent: bool = False) -> SessionConfig:
    """`current` changed by the `session` of a session.update."""
    session = _object(body, "session")
    if flavour == GA:
        return _update_ga(current, session, audio_sent)
    _unknown(session, BETA_FIELDS, "session")
    changes: dict[str, Any] = {}
    changes.update(_common(current, session, "session", flavour, audio_sent))
    if "input_audio_format" in session:
        changes["input_format"] = _beta_format(session["input_audio_format"], "session.input_audio_format")
    if "output_audio_format" in session:
        changes["output_format"] = _beta_format(session["output_audio_format"], "session.output_audio_format")
    if "input_audio_transcription" in session:
        changes["transcription"] = _transcription(
            session["input_audio_transcription"], "session.input_audio_transcription"
        )
    if "input_audio_noise_reduction" in session:
        changes["noise_reduction"] = _noise_reduction(
            session["input_audio_noise_reduction"], "session.input_audio_noise_reduction"
        )
    if "turn_detection" in session:
        changes["turn_detection"] = _turn_detection(
            session["turn_detection"], "session.turn_detection", current.turn_detection
        )
    if "max_response_output_tokens" in session:
        changes["max_output_tokens"] = _max_tokens(
            session["max_response_output_tokens"], "session.max_response_output_tokens"
        )
    if "speed" in session:
        changes["speed"] = _number(session["speed"], "session.speed", 0.25, 1.5)
    return dataclasses.replace(current, **changes)


def _common(
    current: SessionConfig, session: dict[str, Any], prefix: str, flavour: str, audio_sent: bool
) -> dict[str, Any]:
    """The fields both shapes name alike (and a response's overrides share)."""
    changes: dict[str, Any] = {}
    modalities = "output_modalities" if flavour == GA else "modalities"
    if modalities in session:
        changes["modalities"] = _modalities(session[modalities], f"{prefix}.{modalities}", flavour)
    if "instructions" in session:
        changes["instructions"] = _string(session["instructions"], f"{prefix}.instructions")
    if "voice" in session:
        changes["voice"] = _voice(session["voice"], f"{prefix}.voice", current, audio_sent)
    tools = current.tools
    if "tools" in session:
        tools = changes["tools"] = _tools(session["tools"], f"{prefix}.tools")
    if "tool_choice" in session:
        changes["tool_choice"] = _tool_choice(session["tool_choice"], f"{prefix}.tool_choice", tools)
    if "temperature" in session:
        changes["temperature"] = _number(session["temperature"], f"{prefix}.temperature", 0.6, 1.2)
    if "max_output_tokens" in session:
        changes["max_output_tokens"] = _max_tokens(session["max_output_tokens"], f"{prefix}.max_output_tokens")
    return changes


def _update_ga(current: SessionConfig, session: dict[str, Any], audio_sent: bool) -> SessionConfig:
    if "type" not in session:
        raise Invalid("Missing required parameter: 'session.type'.", "session.type", "missing_required_parameter")
    _unknown(session, GA_FIELDS, "session")
    changes: dict[str, Any] = {"type": _choice(session["type"], "session.type", SESSION_TYPES)}
    changes.update(_common(current, session, "session", GA, audio_sent))
    sound = _object(session.get("audio", {}), "session.audio")
    _unknown(sound, {"input", "output"}, "session.audio")
    heard = _object(sound.get("input", {}), "session.audio.input")
    _unknown(heard, {"format", "transcription", "noise_reduction", "turn_detection"}, "session.audio.input")
    said = _object(sound.get("output", {}), "session.audio.output")
    _unknown(said, {"format", "voice", "speed"}, "session.audio.output")
    if "format" in heard:
        changes["input_format"] = _ga_format(heard["format"], "session.audio.input.format")
    if "transcription" in heard:
        changes["transcription"] = _transcription(heard["transcription"], "session.audio.input.transcription")
    if "noise_reduction" in heard:
        changes["noise_reduction"] = _noise_reduction(heard["noise_reduction"], "session.audio.input.noise_reduction")
    if "turn_detection" in heard:
        changes["turn_detection"] = _turn_detection(
            heard["turn_detection"], "session.audio.input.turn_detection", current.turn_detection
        )
    if "format" in said:
        changes["output_format"] = _ga_format(said["format"], "session.audio.output.format")
    if "voice" in said:
        changes["voice"] = _voice(said["voice"], "session.audio.output.voice", current, audio_sent)
    if "speed" in said:
        changes["speed"] = _number(said["speed"], "session.audio.output.speed", 0.25, 1.5)
    return dataclasses.replace(current, **changes)


def override(current: SessionConfig, body: Any, flavour: str) -> SessionConfig:
    """The configuration one response runs with: the session's, changed by `response.create`'s
    `response` (modalities, instructions, voice, output format, tools, tool_choice,
    temperature, max tokens). Fields only a response has (conversation, metadata, input) are
    read by the caller."""
    response = _object(body, "response")
    prefix = "response"
    changes = _common(current, response, prefix, flavour, audio_sent=False)
    if flavour == BETA:
        if "output_audio_format" in response:
            changes["output_format"] = _beta_format(response["output_audio_format"], "response.output_audio_format")
        if "max_response_output_tokens" in response:
            changes["max_output_tokens"] = _max_tokens(
                response["max_response_output_tokens"], "response.max_response_output_tokens"
            )
    else:
        said = _object(_object(response.get("audio", {}), "response.audio").get("output", {}), "response.audio.output")
        if "format" in said:
            changes["output_format"] = _ga_format(said["format"], "response.audio.output.format")
        if "voice" in said:
            changes["voice"] = _voice(said["voice"], "response.audio.output.voice", current, False)
    return dataclasses.replace(current, **changes)


# --- Writing ---------------------------------------------------------------------------------


def render(config: SessionConfig, flavour: str, session_id: str, model: str, expires_at: int) -> dict[str, Any]:
    """The effective configuration as `session.created` / `session.updated` carry it."""
    detection = config.turn_detection.shape() if config.turn_detection else None
    if flavour == BETA:
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": model,
            "expires_at": expires_at,
            "modalities": list(config.modalities),
            "instructions": config.instructions,
            "voice": config.voice,
            "input_audio_format": config.input_format,
            "output_audio_format": config.output_format,
            "input_audio_transcription": config.transcription,
            "input_audio_noise_reduction": config.noise_reduction,
            "turn_detection": detection,
            "tools": list(config.tools),
            "tool_choice": config.tool_choice,
            "temperature": config.temperature,
            "max_response_output_tokens": config.max_output_tokens,
            "speed": config.speed,
            "tracing": None,
        }
    shaped: dict[str, Any] = {
        "type": config.type,
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "expires_at": expires_at,
        "output_modalities": list(config.modalities),
        "instructions": config.instructions,
        "audio": {
            "input": {
                "format": format_shape(config.input_format),
                "transcription": config.transcription,
                "noise_reduction": config.noise_reduction,
                "turn_detection": detection,
            },
            "output": {"format": format_shape(config.output_format), "voice": config.voice, "speed": config.speed},
        },
        "tools": list(config.tools),
        "tool_choice": config.tool_choice,
        "max_output_tokens": config.max_output_tokens,
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
    }
    return shaped


def format_shape(fmt: str) -> dict[str, Any]:
    kind = BETA_TO_GA[fmt]
    return {"type": kind, "rate": audio.RATE} if fmt == audio.PCM16 else {"type": kind}
