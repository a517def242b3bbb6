"""What extensions import: the simulator's extension API in one module.

An extension is a `.py` file or package named in EXTENSION_PATH. It is loaded as an extra
mitmproxy addon (any hook it defines runs after auth, checks and rate limits, before replay,
recording and the generators) and, if it has `initialize(config)`, is called once with the
shared `SimulatorConfig`, where it can:

* add generators (`config.generators.append(f)`), or replace and remove the built-in ones
  (`config.replace_generator("openai_chat", f)`, `config.remove_generator(name)`); a
  generator takes a `RequestContext` and returns a mitmproxy `http.Response`, a `StreamPlan`,
  or None to pass; `chat_response(context, text)` makes a chat answer with your text,
  counted, cut, streamed and timed like a generated one (`response_with_text` for the
  Responses API);
* add forwarders to `config.recording.forwarders` (record mode);
* allow bearer tokens with `config.auth_bearer_token("token")`.

`RequestContext` gives `flow`, `request`, `config` and `values`: the keys in `VALUES`
(deployment, model, operation, prompt_tokens, completion_tokens, audio_seconds, stream_cut_after, …) read
what the stages know, some may be set, and any other key is yours.
"""

from .generators import (
    chat_response,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_images,
    openai_responses,
    openai_speech,
    openai_transcriptions,
    response_with_text,
    rng_for,
)
from .generators import make_generator as document_intelligence_generator
from .openai.catalogue import MODELS, Model, Normal
from .runtime.config import ConfigError, Deployment, Latency, RecordingConfig, SimulatorConfig
from .runtime.state import VALUES, RequestContext, context_of
from .runtime.streams import StreamPlan
from .wire import azure_error, json_response, not_found, openai_error

__all__ = [
    "MODELS",
    "VALUES",
    "ConfigError",
    "Deployment",
    "Latency",
    "Model",
    "Normal",
    "RecordingConfig",
    "RequestContext",
    "SimulatorConfig",
    "StreamPlan",
    "azure_error",
    "chat_response",
    "context_of",
    "document_intelligence_generator",
    "json_response",
    "not_found",
    "openai_chat",
    "openai_completions",
    "openai_embeddings",
    "openai_error",
    "openai_images",
    "openai_responses",
    "openai_speech",
    "openai_transcriptions",
    "response_with_text",
    "rng_for",
]
