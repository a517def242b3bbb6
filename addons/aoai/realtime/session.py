"""One realtime session: client events in, server events out through `emit`.

A session holds its configuration, one conversation (bounded in items and bytes), the input
audio buffer (bounded in bytes) with energy VAD over it, and at most one running response, a
task that sends its events paced by the plan's timing. Nothing a client sends raises: a frame
that is not a valid event gets the `error` event and the session goes on.

Figures the references leave open, chosen here:
- Input audio costs 10 tokens a second (one per 100 ms, as gpt-4o's audio input) and output
  audio 20 a second (one per 50 ms); an earlier answer's audio counts as input audio later.
- `rate_limits.updated` is sent at the start of each response, right after `response.created`
  (the reference's order). With the deployment's quota lent (`Hooks.quota`) it shows what its
  windows have left (requests: new sessions; tokens: responses, charged when each is done);
  without one, stand-in figures with the tokens the response may spend reserved.
- A response the token window has no room for (its input tokens, plus one) ends at once:
  `response.done` with status `failed` and `status_details.error` {type `tokens`, code
  `rate_limit_exceeded`, message with the retry time} (OpenAI's realtime service fails a
  response so when a rate limit is hit; the SDK's status error has `type` and `code`).
- The content filter (`Hooks.judge`) reads the user's text and input transcripts added since
  the last response (or the response's own `input`); a blocked prompt ends the response as
  `incomplete` with `status_details` {type `incomplete`, reason `content_filter`} and no
  output; its input tokens still count. The session goes on.
- Faults (`Hooks.disruption`, drawn for each response): a slow first byte delays the first
  delta (and all after it); a stream cut drops the socket after so many token deltas or so
  many ms from the response's start (`bind_drop` lends the means), as a network fault does.
- Text-only answers wait the time to first audio before their first delta and send the rest
  at once; audio answers send 100 ms of audio per delta at the plan's pace.
- Error codes: a frame that is not a JSON object (binary frames too) `invalid_json`; no `type`
  `missing_required_parameter`; an unknown type `invalid_value` (param `type`, as OpenAI
  answers); a full input buffer `input_audio_buffer_full`; an unknown item `item_not_found`.
- Audio in created and committed items is not kept (only its length): a retrieved item has
  `audio: null`, which keeps a long session's memory flat.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..openai import audio as speech
from ..openai import shapes, text, tokens
from ..openai.chat import json_answer
from ..openai.validation import Invalid
from ..runtime.realtime_server import SessionQuota
from . import audio, config, events
from .config import BETA, GA, SessionConfig
from .timing import Timing

log = logging.getLogger(__name__)

ENCODING = "o200k_base"  # the gpt-4o family's tokenizer
AUDIO_TOKENS_IN = 10  # per second of input audio
AUDIO_TOKENS_OUT = 20  # per second of output audio
WORDS_PER_SECOND = speech.WORDS_PER_SECOND  # about 150 words a minute
MAX_APPEND_BYTES = 15 * 1024 * 1024  # one input_audio_buffer.append, as the reference says
MIN_COMMIT_MS = 100
ANSWER_TOKENS = (20, 60)  # spoken answers are short
RATE_LIMIT_REQUESTS, RATE_LIMIT_TOKENS = 1000, 200_000
EXPIRES_SECONDS = 30 * 60

Emit = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class SessionPlan:
    deployment: str  # the deployment name
    model: str  # the model name (e.g. "gpt-4o-realtime-preview")
    flavour: str  # "beta" (preview path, beta event names) or "ga" (v1 path, GA names)
    latency: Timing  # time to first audio and pace
    seed: int | None = None
    max_audio_buffer_bytes: int = 15 * 1024 * 1024 * 4  # bounded buffered input audio
    max_items: int = 1000  # conversation items kept
    max_conversation_bytes: int = 32 * 1024 * 1024  # text and arguments kept across items


@dataclass
class Usage:
    """Totals of one session, for metrics."""

    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    events_in: int = 0
    events_out: int = 0
    errors: int = 0
    responses: int = 0
    first_audio_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    first_audios: int = 0  # first-audio times ever added (the deque keeps the newest)


@dataclass(frozen=True)
class Disruption:
    """The declared faults that strike one response."""

    first_audio_delay_s: float = 0.0  # slowFirstByte
    cut_after_tokens: int | None = None  # streamCut: token deltas sent before the socket drops
    cut_after_s: float | None = None  # streamCut: seconds from the response's start


@dataclass
class Hooks:
    """What the simulator around a session lends it; each is optional."""

    quota: SessionQuota | None = None  # the deployment's quota windows
    judge: Callable[[str], str | None] | None = None  # the content filter: the category a prompt is blocked for
    disruption: Callable[[], Disruption | None] | None = None  # faults drawn for each response
    struck: Callable[[str], None] | None = None  # counts a fault kind that struck


class _Cut(Exception):
    """A stream cut struck: the socket drops."""


@dataclass
class Running:
    """The response in progress."""

    id: str
    config: SessionConfig
    in_conversation: bool
    input_tokens: tuple[int, int, int]  # text, audio, cached
    metadata: Any
    task: asyncio.Task[None] | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    text_tokens: int = 0
    audio_seconds: float = 0.0
    disruption: Disruption | None = None
    first_delta_sent: bool = False


class Session:
    def __init__(
        self,
        plan: SessionPlan,
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hooks: Hooks | None = None,
    ):
        self.plan, self.flavour = plan, plan.flavour
        self._emit, self.clock, self.sleep = emit, clock, sleep
        self.rng = rng or random.Random(plan.seed)
        # Ids from a generator of their own: the same seed gives the same words, however many events came before.
        self.ids = random.Random(None if plan.seed is None else plan.seed + 1)
        self.corpus = text.corpus(ENCODING)
        self.config = config.initial(plan.flavour)
        self.id = self._id("sess_")
        self.conversation_id = self._id("conv_")
        self.expires_at = int(time.time()) + EXPIRES_SECONDS
        self.items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.item_cost: dict[str, tuple[int, int, int]] = {}  # bytes, text tokens, audio tokens
        self.kept_bytes = 0
        self.buffer = bytearray()
        self.audio_ms = 0  # input audio appended this session
        self.detector: audio.Detector | None = None
        self.speech_item: str | None = None
        self.response: Running | None = None
        self.audio_sent = False
        self.last_input_tokens = 0
        self.tokens_left = RATE_LIMIT_TOKENS
        self.requests_left = RATE_LIMIT_REQUESTS
        self.usage = Usage()
        self.hooks = hooks or Hooks()
        self.judged: set[str] = set()  # user items the content filter has read
        self._drop: Callable[[], Awaitable[None]] | None = None
        self._sending = asyncio.Lock()
        self._build_detector()

    # --- Plumbing ----------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return shapes.make_id(prefix, self.ids)[: len(prefix) + 21]

    async def send(self, event: dict[str, Any]) -> None:
        if not event["type"].endswith(".delta"):
            # Items and responses change as the answer goes on: each event carries them as they were.
            event = orjson.loads(orjson.dumps(event))
        # Shielded: a response cancelled mid-send still sends the whole event, and the lock
        # keeps two events from interleaving on the socket.
        await asyncio.shield(self._send({"event_id": self._id("event_"), **event}))

    async def _send(self, event: dict[str, Any]) -> None:
        async with self._sending:
            self.usage.events_out += 1
            await self._emit(event)

    async def _error(self, problem: Invalid, client_event_id: str | None, kind: str = "invalid_request_error") -> None:
        self.usage.errors += 1
        await self.send(events.error(problem.message, problem.code, problem.param, client_event_id, kind))

    def bind_drop(self, drop: Callable[[], Awaitable[None]]) -> None:
        """The server lends the means to drop the socket (a stream cut)."""
        self._drop = drop

    def _name(self, preview_name: str) -> str:
        return events.name(preview_name, self.flavour)

    # --- The session's life ------------------------------------------------------------------

    async def start(self) -> None:
        await self.send({"type": "session.created", "session": self._rendered()})
        if self.flavour == BETA:
            await self.send(
                {
                    "type": "conversation.created",
                    "conversation": {"id": self.conversation_id, "object": "realtime.conversation"},
                }
            )

    async def close(self) -> None:
        running = self.response
        self.response = None
        if running and running.task:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)

    async def receive(self, message: str | bytes | dict[str, Any]) -> None:
        """Handle one client frame; never raises for anything the client sent."""
        self.usage.events_in += 1
        client_id: str | None = None
        try:
            event = _parse(message)
            client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            kind = event.get("type")
            if kind is None:
                raise Invalid("Missing required parameter: 'type'.", "type", "missing_required_parameter")
            handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                listed = ", ".join(f"'{k}'" for k in _HANDLERS)
                raise Invalid(f"Invalid value: '{kind}'. Supported values are: {listed}.", "type", "invalid_value")
            await handler(self, event)
        except Invalid as problem:
            await self._error(problem, client_id)
        except Exception:  # a bug here must not end the client's session
            log.exception("realtime event failed")
            await self._error(
                Invalid("The server had an error while processing your request.", None, None), client_id, "server_error"
            )

    def _rendered(self) -> dict[str, Any]:
        return config.render(self.config, self.flavour, self.id, self.plan.model, self.expires_at)

    # --- Session -------------------------------------------------------------------------------

    async def _session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise Invalid("Missing required parameter: 'session'.", "session", "missing_required_parameter")
        before = self.config
        self.config = config.update(before, event["session"], self.flavour, self.audio_sent)
        if (before.turn_detection, before.input_format) != (self.config.turn_detection, self.config.input_format):
            self._build_detector()
        await self.send({"type": "session.updated", "session": self._rendered()})

    def _build_detector(self) -> None:
        td = self.config.turn_detection
        rate = audio.rate_of(self.config.input_format)
        self.detector = (
            audio.Detector(td.threshold, td.prefix_padding_ms, td.silence_ms, rate, self.audio_ms) if td else None
        )

    # --- Input audio -------------------------------------------------------------------------

    async def _append(self, event: dict[str, Any]) -> None:
        data = _base64(event.get("audio"), "audio")
        if len(data) > MAX_APPEND_BYTES:
            raise Invalid(
                f"Audio in one event is limited to {MAX_APPEND_BYTES} bytes, got {len(data)}.", "audio", "invalid_value"
            )
        if len(self.buffer) + len(data) > self.plan.max_audio_buffer_bytes:
            raise Invalid(
                f"The input audio buffer holds at most {self.plan.max_audio_buffer_bytes} bytes; commit or clear it first.",
                "audio",
                "input_audio_buffer_full",
            )
        fmt = self.config.input_format
        self.buffer.extend(data)
        seconds = audio.seconds_of(len(data), fmt)
        self.usage.audio_seconds_in += seconds
        self.audio_ms += int(seconds * 1000)
        if self.detector is None:
            return
        for found in self.detector.feed(audio.decode(data, fmt)):
            if found.kind == "started":
                await self._speech_started(found.ms)
            else:
                await self._speech_stopped(found.ms)

    async def _speech_started(self, ms: int) -> None:
        td = self.config.turn_detection
        if td and td.interrupt_response and self.response:
            await self._cancel("turn_detected")
        self.speech_item = self._id("item_")
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": ms, "item_id": self.speech_item}
        )

    async def _speech_stopped(self, ms: int) -> None:
        item_id = self.speech_item or self._id("item_")
        self.speech_item = None
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ms, "item_id": item_id})
        await self._commit_buffer(item_id)
        td = self.config.turn_detection
        if td and td.create_response and self.config.type == "realtime" and self.response is None:
            await self._start_response({}, None)

    async def _commit(self, event: dict[str, Any]) -> None:
        ms = audio.seconds_of(len(self.buffer), self.config.input_format) * 1000
        if ms < MIN_COMMIT_MS:
            raise Invalid(
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
                None,
                "input_audio_buffer_commit_empty",
            )
        await self._commit_buffer(self.speech_item or self._id("item_"))
        self.speech_item = None

    async def _commit_buffer(self, item_id: str) -> None:
        seconds = audio.seconds_of(len(self.buffer), self.config.input_format)
        self.buffer = bytearray()
        previous = next(reversed(self.items)) if self.items else None
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "audio": None, "transcript": None}],
        }
        await self._add_item(item, previous, audio_seconds=seconds)
        if self.config.transcription is not None:
            await self._transcribe(item, seconds)

    async def _transcribe(self, item: dict[str, Any], seconds: float) -> None:
        said = speech.transcript(max(seconds, 0.4), self.rng).text
        base = {"item_id": item["id"], "content_index": 0}
        if self.flavour == GA:
            await self.send({"type": "conversation.item.input_audio_transcription.delta", **base, "delta": said})
        item["content"][0]["transcript"] = said
        await self.send({"type": "conversation.item.input_audio_transcription.completed", **base, "transcript": said})

    async def _clear(self, event: dict[str, Any]) -> None:
        self.buffer = bytearray()
        if self.detector:
            self.detector.reset()
        self.speech_item = None
        await self.send({"type": "input_audio_buffer.cleared"})

    # --- Conversation --------------------------------------------------------------------------

    async def _add_item(
        self, item: dict[str, Any], previous: str | None, audio_seconds: float = 0.0, announce: bool = True
    ) -> None:
        self._keep(item, audio_seconds)
        if not announce:
            return
        await self.send({"type": self._name("conversation.item.created"), "previous_item_id": previous, "item": item})
        if self.flavour == GA and item.get("status") != "in_progress":
            await self.send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    def _keep(self, item: dict[str, Any], audio_seconds: float = 0.0, audio_rate: int = AUDIO_TOKENS_IN) -> None:
        """Keep `item` (or its newer form) and what it costs; the oldest go past the bounds."""
        item_id = item["id"]
        old = self.item_cost.pop(item_id, (0, 0, 0))
        self.kept_bytes -= old[0]
        said = _item_text(item)
        size = len(said.encode()) + 200
        self.items[item_id] = item
        self.item_cost[item_id] = (
            size,
            tokens.count(said, self.corpus.enc) if said else 0,
            int(audio_seconds * audio_rate) or old[2],
        )
        self.kept_bytes += size
        while len(self.items) > self.plan.max_items or (
            self.kept_bytes > self.plan.max_conversation_bytes and len(self.items) > 1
        ):
            oldest, _ = self.items.popitem(last=False)
            self.kept_bytes -= self.item_cost.pop(oldest)[0]

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = _checked_item(event.get("item"), self.flavour)
        if "id" not in item or item["id"] in self.items:
            if item.get("id") in self.items:
                raise Invalid(f"Item with id '{item['id']}' already exists.", "item.id", "invalid_value")
            item["id"] = self._id("item_")
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self.items:
            raise Invalid(f"Item with item_id '{previous}' not found.", "previous_item_id", "item_not_found")
        seconds = 0.0
        for part in item.get("content") or []:
            if part.get("type") == "input_audio" and isinstance(part.get("audio"), str):
                data = _base64(part["audio"], "item.content.audio")
                seconds += audio.seconds_of(len(data), self.config.input_format)
                part["audio"] = None
        last = next(reversed(self.items)) if self.items else None
        await self._add_item(item, previous if previous is not None else last, audio_seconds=seconds)

    def _found(self, event: dict[str, Any]) -> dict[str, Any]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise Invalid("Missing required parameter: 'item_id'.", "item_id", "missing_required_parameter")
        if item_id not in self.items:
            raise Invalid(f"Item with item_id '{item_id}' not found.", "item_id", "item_not_found")
        return self.items[item_id]

    async def _item_retrieve(self, event: dict[str, Any]) -> None:
        await self.send({"type": "conversation.item.retrieved", "item": self._found(event)})

    async def _item_delete(self, event: dict[str, Any]) -> None:
        item = self._found(event)
        del self.items[item["id"]]
        self.kept_bytes -= self.item_cost.pop(item["id"])[0]
        await self.send({"type": "conversation.item.deleted", "item_id": item["id"]})

    async def _item_truncate(self, event: dict[str, Any]) -> None:
        item = self._found(event)
        index, end_ms = event.get("content_index", 0), event.get("audio_end_ms")
        content = item.get("content") or []
        if item.get("role") != "assistant" or not isinstance(index, int) or not 0 <= index < len(content):
            raise Invalid("Only assistant messages with audio can be truncated.", "item_id", "invalid_value")
        if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
            raise Invalid("Invalid 'audio_end_ms': expected a non-negative integer.", "audio_end_ms", "invalid_value")
        audio_tokens = self.item_cost[item["id"]][2]
        length_ms = audio_tokens * 1000 // AUDIO_TOKENS_OUT
        if end_ms > length_ms:
            raise Invalid(
                f"Audio content of {length_ms}ms is already shorter than {end_ms}ms", "audio_end_ms", "invalid_value"
            )
        part = content[index]
        if isinstance(part.get("transcript"), str) and length_ms:
            words = part["transcript"].split()
            part["transcript"] = " ".join(words[: len(words) * end_ms // length_ms])
        self._keep(item, end_ms / 1000, AUDIO_TOKENS_OUT)
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": index,
                "audio_end_ms": end_ms,
            }
        )

    # --- Responses ---------------------------------------------------------------------------

    async def _response_create(self, event: dict[str, Any]) -> None:
        if self.response is not None:
            raise Invalid(
                f"Conversation already has an active response in progress: {self.response.id}. "
                "Wait until the response is finished before creating a new one.",
                None,
                "conversation_already_has_active_response",
            )
        body = event.get("response", {})
        await self._start_response(body if body is not None else {}, event.get("event_id"))

    async def _start_response(self, body: Any, client_id: Any) -> None:
        cfg = config.override(self.config, body, self.flavour)
        conversation = body.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise Invalid(
                f"Invalid value: '{conversation}'. Supported values are: 'auto', 'none'.",
                "response.conversation",
                "invalid_value",
            )
        given = body.get("input")
        if given is not None and not isinstance(given, list):
            raise Invalid("Invalid type for 'response.input': expected an array.", "response.input", "invalid_type")
        context = [_checked_item(i, self.flavour) for i in given] if given is not None else None
        running = Running(
            self._id("resp_"), cfg, conversation == "auto", self._input_tokens(cfg, context), body.get("metadata")
        )
        self.response = running
        # Timed from here, not from when the task first runs: a busy loop must not add to the first audio.
        running.task = asyncio.create_task(self._guarded(running, context, self.clock()))

    async def _guarded(self, running: Running, context: list[dict[str, Any]] | None, started: float) -> None:
        """A response's task: a bug in it ends the response with Azure's server_error event,
        never the session."""
        try:
            await self._run(running, context, started)
        except Exception:
            log.exception("realtime response failed")
            if self.response is running:
                self.response = None
            await self._error(
                Invalid("The server had an error while processing your request.", None, None), None, "server_error"
            )

    def _input_tokens(self, cfg: SessionConfig, context: list[dict[str, Any]] | None) -> tuple[int, int, int]:
        """Text, audio and cached input tokens: the instructions, tools and conversation (or the
        response's own input); the part the previous response read is cached (in 64-token steps past 1,024)."""
        text_tokens = tokens.count(cfg.instructions, self.corpus.enc) + tokens.count_tools(
            list(cfg.tools), self.corpus.enc
        )
        audio_tokens = 0
        if context is None:
            for cost in self.item_cost.values():
                text_tokens += cost[1]
                audio_tokens += cost[2]
        else:
            text_tokens += sum(tokens.count(_item_text(i), self.corpus.enc) for i in context)
        total = text_tokens + audio_tokens
        cached = min(self.last_input_tokens, total)
        cached = cached // 64 * 64 if cached >= 1024 else 0
        self.last_input_tokens = total if context is None else self.last_input_tokens
        return text_tokens, audio_tokens, min(cached, text_tokens)

    def _response_shape(self, running: Running, status: str, details: dict[str, Any] | None) -> dict[str, Any]:
        cfg = running.config
        shape: dict[str, Any] = {
            "object": "realtime.response",
            "id": running.id,
            "status": status,
            "status_details": details,
            "output": running.output,
            "conversation_id": self.conversation_id if running.in_conversation else None,
            "max_output_tokens": cfg.max_output_tokens,
            "metadata": running.metadata,
            "usage": None,
        }
        if self.flavour == GA:
            shape["output_modalities"] = list(cfg.modalities)
            shape["audio"] = {"output": {"format": config.format_shape(cfg.output_format), "voice": cfg.voice}}
        else:
            shape.update(
                modalities=list(cfg.modalities),
                voice=cfg.voice,
                output_audio_format=cfg.output_format,
                temperature=cfg.temperature,
            )
        if status != "in_progress":
            text_in, audio_in, cached = running.input_tokens
            audio_out = int(running.audio_seconds * AUDIO_TOKENS_OUT)
            shape["usage"] = events.usage(text_in, audio_in, cached, running.text_tokens, audio_out)
        return shape

    async def _run(self, running: Running, context: list[dict[str, Any]] | None, started: float) -> None:
        await self.send({"type": "response.created", "response": self._response_shape(running, "in_progress", None)})
        wait = await self.hooks.quota.room(sum(running.input_tokens[:2]) + 1) if self.hooks.quota else 0.0
        if wait > 0:
            self.response = None
            await self._finish(running, "failed", _rate_limited(wait), charge=False)
            return
        if self._blocked(context):
            self.response = None
            await self._finish(running, "incomplete", {"type": "incomplete", "reason": "content_filter"})
            return
        await self._rate_limits(running)
        disruption = running.disruption = self.hooks.disruption() if self.hooks.disruption else None
        try:
            async with asyncio.timeout(disruption.cut_after_s if disruption else None):
                tool = self._tool_to_call(running.config, context)
                if tool is not None:
                    cut = await self._call(running, tool, started)
                else:
                    cut = await self._say(running, started)
        except (_Cut, TimeoutError):
            await self._cut()
            return
        self.response = None
        await self._finish(
            running,
            "incomplete" if cut else "completed",
            {"type": "incomplete", "reason": "max_output_tokens"} if cut else None,
        )

    async def _rate_limits(self, running: Running) -> None:
        if self.hooks.quota is not None:
            requests, quota_tokens = await self.hooks.quota.figures()
            await self.send(events.rate_limits(requests, quota_tokens))
            return
        reserve = running.config.token_limit or 4096
        self.requests_left = max(0, self.requests_left - 1)
        await self.send(
            events.rate_limits(
                (RATE_LIMIT_REQUESTS, self.requests_left),
                (RATE_LIMIT_TOKENS, max(0, self.tokens_left - sum(running.input_tokens[:2]) - reserve)),
            )
        )

    def _blocked(self, context: list[dict[str, Any]] | None) -> bool:
        """Whether the content filter blocks the user's words this response reads: those added
        since the last response, or the response's own input."""
        judge = self.hooks.judge
        if judge is None:
            return False
        if context is not None:
            fresh = [i for i in context if i.get("role") == "user"]
        else:
            fresh = [i for k, i in self.items.items() if k not in self.judged and i.get("role") == "user"]
            self.judged.update(i["id"] for i in fresh)
            if len(self.judged) > 2 * self.plan.max_items:  # forget those gone from the conversation
                self.judged &= self.items.keys()
        said = " ".join(_item_text(i) for i in fresh).strip()
        return bool(said) and judge(said) is not None

    async def _cut(self) -> None:
        """A stream cut: the socket drops mid-response, with no response.done."""
        self.response = None
        if self.hooks.struck:
            self.hooks.struck("streamCut")
        if self._drop is not None:
            await self._drop()

    def _token(self, running: Running) -> None:
        """One more token delta; a stream cut after so many strikes before it is sent."""
        running.text_tokens += 1
        limit = running.disruption.cut_after_tokens if running.disruption else None
        if limit is not None and running.text_tokens > limit:
            raise _Cut

    def _paced_from(self, running: Running, started: float) -> float:
        """When the response's pacing starts: a slow first byte moves every delta later."""
        delay = running.disruption.first_audio_delay_s if running.disruption else 0.0
        if delay > 0 and not running.first_delta_sent:
            running.first_delta_sent = True
            if self.hooks.struck:
                self.hooks.struck("slowFirstByte")
        return started + delay

    async def _finish(self, running: Running, status: str, details: dict[str, Any] | None, charge: bool = True) -> None:
        shape = self._response_shape(running, status, details)
        usage = shape["usage"]
        if not charge:
            shape["usage"] = usage = events.usage(0, 0, 0, 0, 0)
        self.usage.responses += 1
        self.usage.input_tokens += usage["input_tokens"]
        self.usage.output_tokens += usage["output_tokens"]
        self.tokens_left = max(0, self.tokens_left - usage["total_tokens"])
        if charge and self.hooks.quota is not None and usage["total_tokens"]:
            await self.hooks.quota.charge(usage["total_tokens"])
        await self.send({"type": "response.done", "response": shape})

    async def _cancel(self, reason: str) -> None:
        running = self.response
        if running is None or running.task is None:
            return
        self.response = None
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        for item in running.output:
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
        await self._finish(running, "cancelled", {"type": "cancelled", "reason": reason})

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        if self.response is None:
            raise Invalid("Cancellation failed: no active response found", None, "response_cancel_not_active")
        await self._cancel("client_cancelled")

    def _tool_to_call(self, cfg: SessionConfig, context: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        """The tool this response calls: the one named, any with "required", and with "auto"
        any unless the conversation ends with a function's output (then the model answers it)."""
        if not cfg.tools or cfg.tool_choice == "none":
            return None
        if isinstance(cfg.tool_choice, dict):
            return next(t for t in cfg.tools if t["name"] == cfg.tool_choice["name"])
        items = context if context is not None else list(self.items.values())
        if cfg.tool_choice == "auto" and items and items[-1].get("type") == "function_call_output":
            return None
        return cfg.tools[self.rng.randrange(len(cfg.tools))]

    async def _open_item(self, running: Running, item: dict[str, Any]) -> int:
        index = len(running.output)
        running.output.append(item)
        await self.send(
            {"type": "response.output_item.added", "response_id": running.id, "output_index": index, "item": item}
        )
        if running.in_conversation:
            previous = next(reversed(self.items)) if self.items else None
            await self._add_item(item, previous)
        return index

    async def _close_item(self, running: Running, index: int, audio_seconds: float = 0.0) -> None:
        item = running.output[index]
        item["status"] = "completed"
        if running.in_conversation:
            self._keep(item, audio_seconds, AUDIO_TOKENS_OUT)
            if self.flavour == GA:
                await self.send({"type": "conversation.item.done", "item": item})
        await self.send(
            {"type": "response.output_item.done", "response_id": running.id, "output_index": index, "item": item}
        )

    async def _until(self, at: float) -> None:
        delay = at - self.clock()
        if delay > 0:
            await self.sleep(delay)

    async def _call(self, running: Running, tool: dict[str, Any], started: float) -> bool:
        budget = running.config.token_limit or 4096
        arguments, ids, cut = json_answer(tool["parameters"], self.corpus, self.rng, budget)
        call_id = self._id("call_")
        item = {
            "id": self._id("item_"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": tool["name"],
            "call_id": call_id,
            "arguments": "",
        }
        index = await self._open_item(running, item)
        await self._until(self._paced_from(running, started) + self.plan.latency.first_audio)
        where = {"response_id": running.id, "item_id": item["id"], "output_index": index, "call_id": call_id}
        for piece in self.corpus.pieces(ids):
            item["arguments"] += piece
            self._token(running)
            await self.send({"type": "response.function_call_arguments.delta", **where, "delta": piece})
        item["arguments"] = arguments
        await self.send({"type": "response.function_call_arguments.done", **where, "arguments": arguments})
        await self._close_item(running, index)
        return cut

    async def _say(self, running: Running, started: float) -> bool:
        cfg = running.config
        answer = self.corpus.answer(self.rng, self.rng.randint(*ANSWER_TOKENS), cfg.token_limit)
        pieces = self.corpus.pieces(answer.token_ids)
        content: list[dict[str, Any]] = []
        item = {
            "id": self._id("item_"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": content,
        }
        index = await self._open_item(running, item)
        kind = "audio" if cfg.speaks else "text"
        part: dict[str, Any] = {"type": events.part_type(kind, self.flavour)}
        part.update({"audio": None, "transcript": ""} if cfg.speaks else {"text": ""})
        where = {"response_id": running.id, "item_id": item["id"], "output_index": index, "content_index": 0}
        await self.send({"type": "response.content_part.added", **where, "part": dict(part)})
        content.append(part)
        if cfg.speaks:
            seconds = await self._speak(running, answer.text, pieces, part, where, started)
            await self.send({"type": self._name("response.audio.done"), **where})
            await self.send({"type": self._name("response.audio_transcript.done"), **where, "transcript": answer.text})
        else:
            seconds = 0.0
            await self._until(self._paced_from(running, started) + self.plan.latency.first_audio)
            for piece in pieces:
                part["text"] += piece
                self._token(running)
                await self.send({"type": self._name("response.text.delta"), **where, "delta": piece})
            await self.send({"type": self._name("response.text.done"), **where, "text": answer.text})
        await self.send({"type": "response.content_part.done", **where, "part": part})
        await self._close_item(running, index, seconds)
        return answer.truncated

    async def _speak(
        self,
        running: Running,
        said: str,
        pieces: list[str],
        part: dict[str, Any],
        where: dict[str, Any],
        started: float,
    ) -> float:
        """Audio deltas of 100 ms, each after the transcript it carries; the audio lasts as long
        as the words take to say at the voice's speed."""
        cfg = running.config
        seconds = max(0.5, len(said.split()) / (WORDS_PER_SECOND * cfg.speed))
        timing, told = self.plan.latency, 0
        previous_end = 0.0
        for end, data in audio.chunks(seconds, cfg.voice, cfg.output_format):
            await self._until(self._paced_from(running, started) + timing.offset(previous_end))
            if previous_end == 0.0:
                self.usage.first_audio_seconds.append(self.clock() - started)
                self.usage.first_audios += 1
            due = min(len(pieces), round(len(pieces) * end / seconds))
            for piece in pieces[told:due]:
                part["transcript"] += piece
                self._token(running)
                await self.send({"type": self._name("response.audio_transcript.delta"), **where, "delta": piece})
            told = due
            await self.send(
                {"type": self._name("response.audio.delta"), **where, "delta": base64.b64encode(data).decode()}
            )
            running.audio_seconds += end - previous_end
            self.usage.audio_seconds_out += end - previous_end
            self.audio_sent = True
            previous_end = end
        return seconds

    async def _output_audio_clear(self, event: dict[str, Any]) -> None:
        raise Invalid("output_audio_buffer.clear is only supported for WebRTC sessions.", "type", "invalid_value")


_Handler = Callable[[Session, dict[str, Any]], Awaitable[None]]
_HANDLERS: dict[str, _Handler] = {
    "session.update": Session._session_update,
    "input_audio_buffer.append": Session._append,
    "input_audio_buffer.commit": Session._commit,
    "input_audio_buffer.clear": Session._clear,
    "conversation.item.create": Session._item_create,
    "conversation.item.retrieve": Session._item_retrieve,
    "conversation.item.truncate": Session._item_truncate,
    "conversation.item.delete": Session._item_delete,
    "response.create": Session._response_create,
    "response.cancel": Session._response_cancel,
    "output_audio_buffer.clear": Session._output_audio_clear,
}


def _rate_limited(wait_s: float) -> dict[str, Any]:
    """A failed response's status details when the token window is full."""
    seconds = max(1, int(wait_s + 0.999))
    message = (
        "Rate limit reached for this deployment's tokens per minute. "
        f"Please try again in {seconds}s."  # whole seconds, as Azure's 429 texts give them
    )
    return {"type": "failed", "error": {"type": "tokens", "code": "rate_limit_exceeded", "message": message}}


def _parse(message: str | bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(message, dict):
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        raise Invalid("Binary frames are not supported: send each event as a JSON text frame.", None, "invalid_json")
    try:
        event = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise Invalid("The event could not be parsed as JSON.", None, "invalid_json") from None
    if not isinstance(event, dict):
        raise Invalid("The event must be a JSON object.", None, "invalid_json")
    return event


def _base64(value: Any, param: str) -> bytes:
    if not isinstance(value, str):
        raise Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"Invalid '{param}': expected base64-encoded audio.", param, "invalid_value") from None


_ROLES = ("user", "assistant", "system")
_PARTS = {
    "user": ("input_text", "input_audio", "text"),
    "system": ("input_text", "text"),
    "assistant": ("text", "audio", "output_text", "output_audio"),
}


def _checked_item(value: Any, flavour: str) -> dict[str, Any]:
    """A copy of a client's item, checked: a message with content parts its role may send, a
    function call, or a function call's output."""
    if not isinstance(value, dict):
        raise Invalid("Missing required parameter: 'item'.", "item", "missing_required_parameter")
    item: dict[str, Any] = orjson.loads(orjson.dumps(value))  # our own copy: statuses and transcripts change later
    kind = item.get("type")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise Invalid(
                f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', 'system'.",
                "item.role",
                "invalid_value",
            )
        content = item.get("content")
        if not isinstance(content, list):
            raise Invalid("Missing required parameter: 'item.content'.", "item.content", "missing_required_parameter")
        for i, part in enumerate(content):
            allowed = _PARTS[role]
            if not isinstance(part, dict) or part.get("type") not in allowed:
                listed = ", ".join(f"'{a}'" for a in allowed)
                got = part.get("type") if isinstance(part, dict) else part
                raise Invalid(
                    f"Invalid value: '{got}'. Supported values are: {listed}.",
                    f"item.content[{i}].type",
                    "invalid_value",
                )
    elif kind == "function_call":
        for name in ("name", "call_id"):
            if not isinstance(item.get(name), str):
                raise Invalid(
                    f"Missing required parameter: 'item.{name}'.", f"item.{name}", "missing_required_parameter"
                )
        item.setdefault("arguments", "")
    elif kind == "function_call_output":
        for name in ("call_id", "output"):
            if not isinstance(item.get(name), str):
                raise Invalid(
                    f"Missing required parameter: 'item.{name}'.", f"item.{name}", "missing_required_parameter"
                )
    else:
        raise Invalid(
            f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', 'function_call_output'.",
            "item.type",
            "invalid_value",
        )
    item.setdefault("object", "realtime.item")
    item.setdefault("status", "completed")
    return item


def _item_text(item: dict[str, Any]) -> str:
    """The text an item puts before the model: message text and transcripts, call arguments, outputs."""
    said = [str(item.get(k, "")) for k in ("arguments", "output", "name") if isinstance(item.get(k), str)]
    for part in item.get("content") or []:
        if isinstance(part, dict):
            said.extend(str(part[k]) for k in ("text", "transcript") if isinstance(part.get(k), str))
    return " ".join(said)
