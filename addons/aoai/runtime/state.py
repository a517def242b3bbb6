"""What the stages know about one request: one typed object per flow, set by routing.

Stages read and write its fields; nothing they tell each other travels under string keys.
Extensions receive the same object (`RequestContext`: flow, request, config, values) and
use `values`, a dictionary view documented in `VALUES` below: the keys it names read (and,
where marked, set) the typed fields, and any other key is the extension's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mitmproxy import http

    from ..openai.content_filter import AnswerFilter
    from ..openai.forms import Form
    from .config import Deployment, SimulatorConfig
    from .faults import Fault
    from .routes import Route
    from .services import Services
    from .streams import StreamPlan

METADATA_KEY = "aoai"  # the one flow.metadata entry the simulator uses


@dataclass
class Hold:
    """When the pacing stage sends a ready answer (runtime/latency.py's `hold`)."""

    seconds: float  # counted from the request's arrival, or from entering the gate
    gate: asyncio.Semaphore | None = None  # the deployment's concurrency queue, if any


@dataclass(eq=False)
class RequestContext:
    """One request's state (extension contract: flow, request, config, values)."""

    flow: http.HTTPFlow
    config: SimulatorConfig | None = None
    route: Route | None = None  # None: no route has this path (an extension may serve it)
    params: dict[str, str] = field(default_factory=dict)  # the path's parameters (deployment, model, …)
    allowed_methods: tuple[str, ...] = ()  # the path is known, but not for this method
    deployment: Deployment | None = None
    api_version: str | None = None
    body: Any = None  # the parsed JSON body of an OpenAI request (a form's text fields, for uploads)
    form: Form | None = None  # a multipart/form-data body, parsed once (audio uploads, image edits)
    checked: Any = None  # what the route's check made of the body (audio and image requests)
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the prompt cache had seen (prompt caching)
    history: list[dict[str, Any]] = field(
        default_factory=list
    )  # Responses: the earlier turns previous_response_id names
    completion_tokens: int = 0
    estimated_tokens: int = 0  # the up-front estimate charged against the token quota (or PTU bucket)
    quota_checked_at: float | None = None  # the windows' clock when the quota was checked
    quota_headers: dict[str, str] | None = None  # x-ratelimit-* (or utilization) headers the answer will carry
    arrived_at: float | None = None  # time.time() the request reached the machine
    latency_s: float = 0.0  # the simulated wait of a non-streamed answer
    hold: Hold | None = None  # the pacing stage sends the answer when this says
    stream: StreamPlan | None = None  # a paced stream the streaming stage plays
    played_at: float | None = None  # when a stream written straight to the client began
    recording: bool | None = None  # record mode: forwarded; True when the exchange is to be saved
    recording_key: str | None = None  # record and replay modes: the request's key among the recordings
    # Record mode: the file its exchange is saved to, chosen when it came (a cassette put in
    # meanwhile does not move it).
    recording_file: str | None = None
    # Record mode without AZURE_OPENAI_KEY: a bearer passed to Azure unchecked (Azure judges it),
    # so the request is forwarded even when a recording would answer it.
    passed_through: bool = False
    query_secrets: tuple[tuple[str, str], ...] = ()  # key-like query parameters taken off the request
    # A WebSocket handed on by the realtime stage: "loopback" (a simulated session) or "azure"
    # (record mode relays it); the stages that answer requests leave such a flow alone.
    websocket: str | None = None
    stream_cut_after: int | None = None  # token steps after which a stream breaks (fault injection)
    # Content filter: each prompt's results when a rule scored something (None: all safe), how
    # answers are judged (generate mode), and what it blocked, as (prompt|completion, category).
    prompt_filter: list[dict[str, Any]] | None = None
    answer_filter: AnswerFilter | None = None
    filtered: list[tuple[str, str]] = field(default_factory=list)
    fault_shapes: tuple[Fault, ...] = ()  # declared faults that change how the answer leaves
    extras: dict[str, Any] = field(default_factory=dict)  # extensions' own values
    # The stores and servers the simulator keeps (runtime/services.py): what generators fill and read.
    services: Services | None = field(default=None, repr=False)
    _values: ExtensionValues | None = field(default=None, init=False, repr=False)

    @property
    def request(self) -> http.Request:
        return self.flow.request

    @property
    def operation(self) -> Route | None:
        """The route (its `.name` is the operation: chat, completions, embeddings, …)."""
        return self.route

    @property
    def values(self) -> ExtensionValues:
        if self._values is None:
            self._values = ExtensionValues(self)
        return self._values

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # Flows copy their metadata when saved or duplicated (mitmweb); keep a plain summary.
        return {
            "operation": self.route.operation if self.route else None,
            "deployment": self.deployment.name if self.deployment else None,
            **{k: v for k, v in self.values.items() if isinstance(v, (str, int, float, bool))},
        }


def _deployment(c: RequestContext) -> str | None:
    return c.deployment.name if c.deployment else None


def _model(c: RequestContext) -> str | None:
    return c.deployment.model.name if c.deployment else None


# The keys extensions may use in `context.values`: key -> (read, field it sets or None, meaning).
VALUES: dict[str, tuple[Any, str | None, str]] = {
    "deployment": (_deployment, None, "the deployment's name"),
    "model": (_model, None, "the deployment's model"),
    "operation": (
        lambda c: c.route.operation if c.route else None,
        None,
        "chat, completions, embeddings, responses, models, document_intelligence, …",
    ),
    "api_version": (lambda c: c.api_version, None, "the request's api-version"),
    "prompt_tokens": (lambda c: c.prompt_tokens, "prompt_tokens", "tokens in the prompt, counted as Azure does"),
    "cached_tokens": (lambda c: c.cached_tokens, None, "prompt tokens the prompt cache had seen"),
    "completion_tokens": (lambda c: c.completion_tokens, "completion_tokens", "tokens in the answer, once made"),
    "estimated_tokens": (lambda c: c.estimated_tokens, None, "what the token quota was charged up front"),
    "quota_checked_at": (lambda c: c.quota_checked_at, None, "when the quota was checked (its windows' clock)"),
    "audio_seconds": (
        lambda c: getattr(c.checked, "duration", None),
        None,
        "seconds of audio: the upload's (transcriptions, translations) or the speech made",
    ),
    "latency_s": (lambda c: c.latency_s, "latency_s", "seconds a non-streamed answer is held after arrival"),
    "stream_cut_after": (
        lambda c: c.stream_cut_after,
        "stream_cut_after",
        "set it to N to break a generated stream after N token steps",
    ),
}


class ExtensionValues(MutableMapping[str, Any]):
    """`context.values`: the documented keys read the typed fields (those with a field are
    writable); other keys hold an extension's own values."""

    __slots__ = ("_context",)

    def __init__(self, context: RequestContext):
        self._context = context

    def __getitem__(self, key: str) -> Any:
        known = VALUES.get(key)
        if known is None:
            return self._context.extras[key]
        value = known[0](self._context)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        known = VALUES.get(key)
        if known is None:
            self._context.extras[key] = value
        elif known[1] is None:
            raise KeyError(f"context.values[{key!r}] is read-only")
        else:
            setattr(self._context, known[1], value)

    def __delitem__(self, key: str) -> None:
        if key in VALUES:
            raise KeyError(f"context.values[{key!r}] cannot be deleted")
        del self._context.extras[key]

    def __iter__(self) -> Iterator[str]:
        for key, (read, _, _) in VALUES.items():
            if read(self._context) is not None:
                yield key
        yield from self._context.extras

    def __len__(self) -> int:
        return sum(1 for _ in self)


def context_of(flow: http.HTTPFlow) -> RequestContext | None:
    context = flow.metadata.get(METADATA_KEY)
    return context if isinstance(context, RequestContext) else None


def context_for(
    flow: http.HTTPFlow, config: SimulatorConfig | None = None, services: Services | None = None
) -> RequestContext:
    """The flow's context, made (and attached) if it has none yet."""
    context = flow.metadata.get(METADATA_KEY)
    if not isinstance(context, RequestContext):
        context = flow.metadata[METADATA_KEY] = RequestContext(flow, config, services=services)
    return context
