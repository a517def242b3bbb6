"""The route table: every API the simulator answers, declared once.

A `Route` says what a request is (operation, method, path), how Azure treats it (its
operation id in 429 texts, the model kind it needs, which quota it draws from, whether it
takes an api-version), how a recording of it is named on disk, and which generator answers
it. The routing stage resolves a request against this table once; auth, checks, limits,
replay, record, generation and metrics read the result. Adding an API is one `Route` here
and one module for its answers.

Paths match as Azure matches them: literal segments in any case, an optional trailing slash,
and percent-encoded characters decoded per segment (so `%3Aanalyze` is `:analyze`, while an
encoded `/` inside a deployment name stays inside it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..batch.files import MAX_UPLOAD_BODY
from ..openai import audio, catalogue, completions, content_filter, images, responses, tokens, validation
from .bounds import Bounds

if TYPE_CHECKING:
    from tiktoken import Encoding

    from ..openai.audio import AudioRequest
    from ..openai.catalogue import Model
    from ..openai.forms import Form
    from ..openai.images import ImageRequest

# Which quota a route draws from (ratelimit stage).
NO_QUOTA = "none"
DEPLOYMENT_QUOTA = "deployment"  # the deployment's tokens- and requests-per-minute windows
DI_ANALYZE_QUOTA = "document-intelligence:analyze"  # DOC_INTELLIGENCE_RPS
DI_POLL_QUOTA = "document-intelligence:poll"  # DOC_INTELLIGENCE_POLL_RPS

# Families: who answers, and what they share (auth, metrics).
OPENAI = "openai"
DOCUMENT_INTELLIGENCE = "document_intelligence"
MANAGEMENT = "management"

# How an OpenAI route's body is read: JSON, a multipart/form-data upload (audio, image edits),
# or none at all (a WebSocket handshake: the deployment is in the query).
JSON_BODY, FORM_BODY, NO_BODY = "json", "form", "none"

# api-version: required in the query (missing: Azure's 404), optional (v1 paths), ignored, or
# refused (the GA realtime path: Azure answers one with 401).
REQUIRED, OPTIONAL, IGNORED, REFUSED = "required", "optional", "ignored", "refused"


@dataclass(frozen=True, eq=False)
class Route:
    operation: str  # our name for it: metrics label, latency and generator lookups ("chat", …)
    methods: tuple[str, ...]
    pattern: str  # "/openai/deployments/{deployment}/chat/completions"; {name:a|b} limits a parameter
    family: str
    generator: str = ""  # the built-in generator that answers it
    azure_operation: str = ""  # Azure's operation id, as its 429 texts name it
    model_kind: str | None = None  # the model kind the deployment must have (OpenAI routes)
    verb: str = ""  # Azure's word for it in "the … operation does not work with the specified model"
    quota: str = NO_QUOTA
    api_version: str = IGNORED
    since: str = ""  # the first api-version that has it ("": every version the policy accepts)
    previews_only: bool = False  # only `-preview` api-versions have it (the preview realtime path)
    open: bool = False  # answered without a key (probes and scrapers carry none)
    recording: str = ""  # the recording file's name, from the path's parameters ("" : from the path)
    # The Azure RBAC data action a principal needs for it, as Azure's PermissionDenied names it.
    data_action: str = ""
    body: str = JSON_BODY
    max_body: int = 0  # bytes a form body may have (0: the configured limit for JSON bodies)
    # The query parameter naming the deployment, for routes without a body (WebSocket handshakes);
    # "": in the path, else the body's `model`.
    deployment_query: str = ""
    websocket: bool = False  # a WebSocket handshake: anything else gets a 400
    # Answered from the data folder (files, batch jobs) in generate and replay modes, never from
    # recordings: what they answer is state the client made here.
    from_data_folder: bool = False
    # Body checks (raise validation.Invalid) and the prompt's token count, for OpenAI routes.
    # A check gets the JSON body (or the parsed form, and the bounds its media are judged by);
    # what it returns is kept for the generator (audio and image routes return the checked
    # request), None elsewhere.
    check: Callable[..., Any] | None = None
    prompt_tokens: Callable[[dict[str, Any], Encoding], int] | None = None
    # The texts the content filter judges as the prompt(s); None: the route is not filtered.
    prompt_texts: Callable[[dict[str, Any]], list[str]] | None = None
    regex: re.Pattern[str] = field(init=False, repr=False)
    choices: frozenset[str] = field(init=False, repr=False)  # parameters spelled in lower case

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", _compile(self.pattern))
        object.__setattr__(self, "choices", frozenset(m.group(1) for m in _PARAM.finditer(self.pattern) if m.group(2)))

    @property
    def name(self) -> str:
        """The operation's name (what `context.operation.name` gave extensions)."""
        return self.operation

    @property
    def needs_deployment(self) -> bool:
        return self.model_kind is not None

    def recording_file(self, params: dict[str, str]) -> str | None:
        """The recording file for a request with these path parameters; None: named by its path."""
        if not self.recording:
            return None
        return self.recording.format(**{k: slug(v) for k, v in params.items()}) + ".yaml"


@dataclass(frozen=True)
class Match:
    route: Route | None  # None: the path is known but not for this method
    params: dict[str, str]
    allowed: tuple[str, ...] = ()  # the methods the path takes, when the method was wrong


_PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")


def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    pos = 0
    for m in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        choices = m.group(2)
        out.append(f"(?P<{m.group(1)}>{choices})" if choices else f"(?P<{m.group(1)}>[^/]+?)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "/?$", re.IGNORECASE)


def _decoded(path: str) -> str:
    """The path with each segment percent-decoded; an encoded '/' stays encoded, so it cannot
    split a segment (it is decoded in the parameter it belongs to)."""
    if "%" not in path:
        return path
    return "/".join(unquote(s).replace("/", "%2F") for s in path.split("/"))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "_"


def _chat_prompt(body: dict[str, Any], enc: Encoding) -> int:
    return tokens.count_chat_prompt(body["messages"], enc, body.get("tools"))


def _completions_prompt(body: dict[str, Any], enc: Encoding) -> int:
    return sum(tokens.count(p, enc) if isinstance(p, str) else len(p) for p in completions.prompts_of(body))


def _embeddings_prompt(body: dict[str, Any], enc: Encoding) -> int:
    return tokens.count_embedding_input(body["input"], enc)


def _image_prompt(body: dict[str, Any], enc: Encoding) -> int:
    return tokens.count(body.get("prompt") or "", enc)


def _no_prompt(body: Any, enc: Encoding) -> int:
    return 0  # counted in requests, not tokens


def _transcription(form: Form, model: Model, bounds: Bounds) -> AudioRequest:
    return audio.check_audio_request(form, model, audio.TRANSCRIBE, bounds.audio_max_seconds)


def _translation(form: Form, model: Model, bounds: Bounds) -> AudioRequest:
    return audio.check_audio_request(form, model, audio.TRANSLATE, bounds.audio_max_seconds)


def _image_edit(form: Form, model: Model, bounds: Bounds) -> ImageRequest:
    return images.check_edit(form, model, bounds.image_max_pixels)


def _openai(
    operation: str,
    path: str,
    generator: str,
    azure_operation: str,
    kind: str,
    verb: str,
    check: Callable[..., Any],
    prompt: Callable[[dict[str, Any], Encoding], int],
    body: str = JSON_BODY,
    max_body: int = 0,
    texts: Callable[[dict[str, Any]], list[str]] | None = None,
) -> list[Route]:
    """An OpenAI operation on its deployment path and on the v1 path (deployment in `model`)."""
    common: dict[str, Any] = dict(
        family=OPENAI,
        generator=generator,
        azure_operation=azure_operation,
        model_kind=kind,
        verb=verb,
        quota=DEPLOYMENT_QUOTA,
        check=check,
        prompt_tokens=prompt,
        body=body,
        max_body=max_body,
        prompt_texts=texts,
        data_action=f"Microsoft.CognitiveServices/accounts/OpenAI/deployments/{path}/action",
    )
    file = path.replace("/", "-")
    return [
        Route(
            operation,
            ("POST",),
            "/openai/deployments/{deployment}/" + path,
            api_version=REQUIRED,
            recording="{deployment}." + file,
            **common,
        ),
        Route(operation, ("POST",), "/openai/v1/" + path, api_version=OPTIONAL, recording="v1." + file, **common),
    ]


def _responses_prompt(body: dict[str, Any], enc: Encoding) -> int:
    return responses.count_input(body, [], enc)


def _responses() -> list[Route]:
    """The Responses API on the v1 path (no api-version needed) and on the preview path
    (api-version 2025-04-01-preview or later); the deployment is in the body's `model`."""
    create: dict[str, Any] = {
        "family": OPENAI,
        "generator": "openai_responses",
        "azure_operation": "Responses_Create",
        "model_kind": catalogue.CHAT,
        "verb": "responses",
        "quota": DEPLOYMENT_QUOTA,
        "check": responses.check_responses,
        "prompt_tokens": _responses_prompt,
        "prompt_texts": content_filter.responses_texts,
    }
    stored: dict[str, Any] = {"family": OPENAI, "generator": "openai_responses"}
    routes = []
    for prefix, policy, since, file in (
        ("/openai/v1/", OPTIONAL, "", "v1.responses"),
        ("/openai/", REQUIRED, "2025-04-01-preview", "responses"),
    ):
        versions: dict[str, Any] = {"api_version": policy, "since": since, "recording": file}
        routes += [
            Route("responses", ("POST",), prefix + "responses", **versions, **create),
            Route("responses_retrieve", ("GET",), prefix + "responses/{response_id}", **versions, **stored),
            Route("responses_delete", ("DELETE",), prefix + "responses/{response_id}", **versions, **stored),
            Route(
                "responses_input_items", ("GET",), prefix + "responses/{response_id}/input_items", **versions, **stored
            ),
            Route("responses_cancel", ("POST",), prefix + "responses/{response_id}/cancel", **versions, **stored),
        ]
    return routes


def _files_and_batches() -> list[Route]:
    """The Files and Batch APIs: on the dated path (api-version 2024-10-21 or later) and on
    the v1 path; no deployment in the path or body (a batch's lines name theirs)."""
    action = "Microsoft.CognitiveServices/accounts/OpenAI/"
    routes = []
    for prefix, policy, since, file in (
        ("/openai/v1/", OPTIONAL, "", "v1."),
        ("/openai/", REQUIRED, "2024-10-21", ""),
    ):
        common: dict[str, Any] = {
            "family": OPENAI,
            "api_version": policy,
            "since": since,
            "from_data_folder": True,
        }
        files, batches = prefix + "files", prefix + "batches"
        routes += [
            Route(
                "files",
                ("POST",),
                files,
                azure_operation="Files_Upload",
                body=FORM_BODY,
                max_body=MAX_UPLOAD_BODY,
                recording=file + "files",
                data_action=action + "files/write",
                **common,
            ),
            Route(
                "files_list",
                ("GET",),
                files,
                azure_operation="Files_List",
                recording=file + "files",
                data_action=action + "files/read",
                **common,
            ),
            Route(
                "file",
                ("GET",),
                files + "/{file_id}",
                azure_operation="Files_Get",
                recording=file + "files.{file_id}",
                data_action=action + "files/read",
                **common,
            ),
            Route(
                "file_delete",
                ("DELETE",),
                files + "/{file_id}",
                azure_operation="Files_Delete",
                recording=file + "files.{file_id}",
                data_action=action + "files/delete",
                **common,
            ),
            Route(
                "file_content",
                ("GET",),
                files + "/{file_id}/content",
                azure_operation="Files_GetContent",
                recording=file + "files.{file_id}",
                data_action=action + "files/read",
                **common,
            ),
            Route(
                "batches",
                ("POST",),
                batches,
                azure_operation="Batch_Create",
                recording=file + "batches",
                data_action=action + "batches/write",
                **common,
            ),
            Route(
                "batches_list",
                ("GET",),
                batches,
                azure_operation="Batch_List",
                recording=file + "batches",
                data_action=action + "batches/read",
                **common,
            ),
            Route(
                "batch",
                ("GET",),
                batches + "/{batch_id}",
                azure_operation="Batch_Get",
                recording=file + "batches.{batch_id}",
                data_action=action + "batches/read",
                **common,
            ),
            Route(
                "batch_cancel",
                ("POST",),
                batches + "/{batch_id}/cancel",
                azure_operation="Batch_Cancel",
                recording=file + "batches.{batch_id}",
                data_action=action + "batches/write",
                **common,
            ),
        ]
    return routes


def _no_check(body: dict[str, Any], model: Model) -> None:
    return None  # a handshake has no body; the session's own events are checked as they come


def _realtime() -> list[Route]:
    """The Realtime API's WebSocket handshakes: the preview path (beta events; a preview
    api-version from 2024-10-01-preview, the deployment in `deployment`) and the GA path (GA
    events; no api-version, the deployment in `model`). A handshake is one request against the
    deployment's request window (no tokens); the session's responses charge its token window."""
    common: dict[str, Any] = {
        "family": OPENAI,
        "azure_operation": "Realtime_Connect",
        "model_kind": catalogue.REALTIME,
        "verb": "realtime",
        "body": NO_BODY,
        "websocket": True,
        "check": _no_check,
        "prompt_tokens": _no_prompt,
        "data_action": "Microsoft.CognitiveServices/accounts/OpenAI/deployments/realtime/action",
        "quota": DEPLOYMENT_QUOTA,
    }
    return [
        Route(
            "realtime",
            ("GET",),
            "/openai/realtime",
            api_version=REQUIRED,
            since="2024-10-01-preview",
            previews_only=True,
            deployment_query="deployment",
            recording="realtime",
            **common,
        ),
        Route(
            "realtime_v1",
            ("GET",),
            "/openai/v1/realtime",
            api_version=REFUSED,
            deployment_query="model",
            recording="v1.realtime",
            **common,
        ),
    ]


_DI_FAMILY = "{family:formrecognizer|documentintelligence}"

ROUTES: list[Route] = [
    *_openai(
        "chat",
        "chat/completions",
        "openai_chat",
        "ChatCompletions_Create",
        catalogue.CHAT,
        "chatCompletion",
        validation.check_chat,
        _chat_prompt,
        texts=content_filter.chat_texts,
    ),
    *_openai(
        "completions",
        "completions",
        "openai_completions",
        "Completions_Create",
        catalogue.COMPLETION,
        "completion",
        validation.check_completions,
        _completions_prompt,
        texts=content_filter.completion_texts,
    ),
    *_openai(
        "embeddings",
        "embeddings",
        "openai_embeddings",
        "Embeddings_Create",
        catalogue.EMBEDDING,
        "embeddings",
        validation.check_embeddings,
        _embeddings_prompt,
    ),
    *_openai(
        "transcriptions",
        "audio/transcriptions",
        "openai_transcriptions",
        "Transcriptions_Create",
        catalogue.TRANSCRIPTION,
        "audioTranscription",
        _transcription,
        _no_prompt,
        FORM_BODY,
        audio.MAX_BODY_BYTES,
    ),
    *_openai(
        "translations",
        "audio/translations",
        "openai_transcriptions",
        "Translations_Create",
        catalogue.TRANSCRIPTION,
        "audioTranslation",
        _translation,
        _no_prompt,
        FORM_BODY,
        audio.MAX_BODY_BYTES,
    ),
    *_openai(
        "speech",
        "audio/speech",
        "openai_speech",
        "Speech_Create",
        catalogue.SPEECH,
        "audioSpeech",
        audio.check_speech,
        _no_prompt,
    ),
    *_openai(
        "images",
        "images/generations",
        "openai_images",
        "ImageGenerations_Create",
        catalogue.IMAGE,
        "imagesGeneration",
        images.check_generation,
        _image_prompt,
        texts=content_filter.image_texts,
    ),
    *_openai(
        "image_edits",
        "images/edits",
        "openai_images",
        "ImageEdits_Create",
        catalogue.IMAGE,
        "imagesEdit",
        _image_edit,
        _image_prompt,
        FORM_BODY,
        images.MAX_EDIT_BODY_BYTES,
        texts=content_filter.image_texts,
    ),
    *_responses(),
    *_files_and_batches(),
    *_realtime(),
    # Batch jobs as the simulator runs them: their progress, and a job's clock run ahead.
    Route("batch_jobs", ("GET",), "/++/batches", MANAGEMENT),
    Route("batch_job_fast_forward", ("POST",), "/++/batches/{batch_id}/fast-forward", MANAGEMENT),
    # Images answered as URLs are fetched here, without a key, as from Azure's signed blob URLs.
    Route("image_file", ("GET",), "/++/images/{image}", MANAGEMENT, open=True),
    Route(
        "models",
        ("GET",),
        "/openai/v1/models",
        OPENAI,
        generator="openai_models",
        api_version=OPTIONAL,
        recording="v1.models",
        data_action="Microsoft.CognitiveServices/accounts/OpenAI/models/read",
    ),
    Route(
        DOCUMENT_INTELLIGENCE,
        ("POST",),
        f"/{_DI_FAMILY}/documentModels/{{model}}:analyze",
        DOCUMENT_INTELLIGENCE,
        generator="document_intelligence",
        azure_operation="Analyze Document",
        quota=DI_ANALYZE_QUOTA,
        recording="{family}.{model}",
        data_action="Microsoft.CognitiveServices/accounts/FormRecognizer/documentmodels:analyze/action",
    ),
    Route(
        DOCUMENT_INTELLIGENCE,
        ("GET",),
        f"/{_DI_FAMILY}/documentModels/{{model}}/analyzeResults/{{result}}",
        DOCUMENT_INTELLIGENCE,
        generator="document_intelligence",
        azure_operation="Get Analyze Result",
        quota=DI_POLL_QUOTA,
        recording="{family}.{model}",
        data_action="Microsoft.CognitiveServices/accounts/FormRecognizer/documentmodels/analyzeresults/read",
    ),
    Route("health", ("GET",), "/++/health", MANAGEMENT, open=True),
    Route("metrics", ("GET",), "/++/metrics", MANAGEMENT, open=True),
    Route("config", ("GET", "PATCH"), "/++/config", MANAGEMENT),
    Route("limits", ("GET",), "/++/limits", MANAGEMENT),
    Route("faults", ("GET",), "/++/faults", MANAGEMENT),
    Route("reset-limits", ("POST",), "/++/reset-limits", MANAGEMENT),
    Route("save-recordings", ("POST",), "/++/save-recordings", MANAGEMENT),
    Route("cassette", ("PUT",), "/++/cassette", MANAGEMENT),
    Route("token", ("POST",), "/++/token", MANAGEMENT),
]


class RouteTable:
    """Finds a request's route. Routes are grouped by their first path segment, so a request
    is tried against the few routes that can match it; and a load test sends the same few
    paths again and again, so recent answers are kept (a Match is shared: read it only)."""

    CACHED = 4096  # paths remembered; past this the memory starts afresh
    # Longer paths (and methods) are resolved each time, never remembered: Azure's own paths
    # are far shorter, and a client sending endless long ones must not fill the memory.
    CACHED_PATH_CHARS = 256
    CACHED_METHOD_CHARS = 16

    def __init__(self, routes: list[Route]):
        self.routes = list(routes)
        self._by_head: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_head.setdefault(_head(route.pattern), []).append(route)
        self._recent: dict[tuple[str, str], Match | None] = {}

    def resolve(self, method: str, path: str) -> Match | None:
        """The route for a method and path (query allowed); None when no route has the path."""
        key = (method, path.partition("?")[0])
        try:
            return self._recent[key]
        except KeyError:
            pass
        found = self._match(method, _decoded(key[1]))
        if len(key[1]) <= self.CACHED_PATH_CHARS and len(method) <= self.CACHED_METHOD_CHARS:
            if len(self._recent) >= self.CACHED:
                self._recent.clear()
            self._recent[key] = found
        return found

    def operation(self, name: str) -> Route | None:
        """The first route of an operation (its dated form where there are two)."""
        return next((r for r in self.routes if r.operation == name), None)

    def usage(self) -> dict[str, int]:
        """For /++/limits: the paths remembered, and the most that may be."""
        return {"count": len(self._recent), "maxCount": self.CACHED, "maxPathChars": self.CACHED_PATH_CHARS}

    def _match(self, method: str, path: str) -> Match | None:
        candidates: Sequence[Route] | None = self._by_head.get(_head(path))
        if candidates is None:
            candidates = self._by_head.get("", ())  # routes whose first segment is a parameter
        allowed: list[str] = []
        params: dict[str, str] = {}
        for route in candidates:
            m = route.regex.match(path)
            if m is None:
                continue
            found = {k: v.lower() if k in route.choices else unquote(v) for k, v in m.groupdict().items()}
            if method in route.methods:
                return Match(route, found)
            allowed.extend(route.methods)
            params = found
        return Match(None, params, tuple(allowed)) if allowed else None

    def canonical_path(self, method: str, path: str) -> str:
        """The path as the route spells it (case, no trailing slash, decoded), so variants of
        one request are one recording; an unknown path as it is."""
        found = self.resolve(method, path)
        if found is None or found.route is None:
            return path.partition("?")[0]
        route = found.route
        return _PARAM.sub(lambda m: found.params[m.group(1)].replace("/", "%2F"), route.pattern)

    def first(self, operation: str) -> Route:
        return next(r for r in self.routes if r.operation == operation)


def _head(path: str) -> str:
    """The first path segment, lower case ("" when it is a parameter with choices)."""
    first = path.lstrip("/").partition("/")[0]
    return "" if first.startswith("{") else first.lower()


TABLE = RouteTable(ROUTES)
