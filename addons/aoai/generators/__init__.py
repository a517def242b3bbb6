"""The built-in generators: one module per API, each a plain function of a `RequestContext`
named so an extension can find, replace or remove it (`config.replace_generator("openai_chat", f)`).

    common      the request's random generator and services; answers held or paced
    chat, completions, embeddings (and the v1 models list), responses, audio, images, docintel

They use the runtime and the domains (openai/, docintel/); the Generate stage calls them, and
they never import a stage.
"""

from __future__ import annotations

from .audio import openai_speech, openai_transcriptions
from .chat import chat_response, openai_chat
from .common import answer_tokens, rng_for, stream_headers, stream_labels
from .completions import openai_completions
from .docintel import document_intelligence, make_generator
from .embeddings import openai_embeddings, openai_models
from .images import image_url, openai_images, share_images
from .responses import openai_responses, response_with_text, responses_answer, stored_size

# In the order the Generate stage tries them (each answers only the routes that name it).
BUILT_IN = [
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
    openai_transcriptions,
    openai_speech,
    openai_images,
    openai_models,
    document_intelligence,
]

__all__ = [
    "BUILT_IN",
    "answer_tokens",
    "chat_response",
    "document_intelligence",
    "image_url",
    "make_generator",
    "openai_chat",
    "openai_completions",
    "openai_embeddings",
    "openai_images",
    "openai_models",
    "openai_responses",
    "openai_speech",
    "openai_transcriptions",
    "response_with_text",
    "responses_answer",
    "rng_for",
    "share_images",
    "stored_size",
    "stream_headers",
    "stream_labels",
]
