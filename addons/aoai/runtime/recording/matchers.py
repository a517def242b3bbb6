"""How a request is told apart from others: its key, worked out the same way for a request
as it arrives and for one read from a recording, so finding a recording is one dictionary
lookup. Also what a miss reports: where a request differs from the closest recorded one.

A key is the method, the path as its route spells it, the query (without `api-version`
unless asked, never a key-like parameter) and a digest of the body's meaning: JSON whatever
its key order and spacing, an upload by its fields and files whatever its boundary.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from ...openai import forms
from ..redaction import secret_query_name

_BOUNDARY = re.compile(r"boundary=\"?([^\";]+)\"?")


@dataclass(frozen=True)
class KeyRules:
    """What makes two requests the same: method, path, query and the body's JSON meaning."""

    ignore_fields: tuple[str, ...] = ()
    match_api_version: bool = False


def request_key(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    content: bytes,
    content_type: str,
    rules: KeyRules,
    form: forms.Form | None = None,
) -> str:
    """The key a request is recorded and found under. `path`: as its route spells it."""
    kept = sorted(
        (k, v) for k, v in query if (rules.match_api_version or k != "api-version") and not secret_query_name(k)
    )
    target = path + ("?" + urlencode(kept) if kept else "")
    digest = hashlib.sha1(body_fingerprint(content, content_type, rules, form)).hexdigest()[:20]
    return f"{method} {target} {digest}"


def body_fingerprint(content: bytes, content_type: str, rules: KeyRules, form: forms.Form | None = None) -> bytes:
    """A body's identity: JSON by meaning (key order and spacing do not count), a form by its
    fields and files' hashes, other multipart with its random boundary normalised, anything
    else byte for byte. `form`: the body's form, when it was parsed already."""
    if content:
        stripped = content.lstrip()
        if stripped[:1] in (b"{", b"["):
            try:
                return _canonical_json(orjson.loads(content), rules)
            except orjson.JSONDecodeError:
                pass
        if "multipart/form-data" in (content_type or ""):
            return _form_fingerprint(content, content_type, rules, form)
        m = _BOUNDARY.search(content_type or "")
        if m and "multipart/" in content_type:
            return content.replace(m.group(1).encode(), b"BOUNDARY")
    return content


def _canonical_json(value: Any, rules: KeyRules) -> bytes:
    if isinstance(value, dict) and rules.ignore_fields:
        value = {k: v for k, v in value.items() if k not in rules.ignore_fields}
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _form_fingerprint(content: bytes, content_type: str, rules: KeyRules, form: forms.Form | None = None) -> bytes:
    """An upload's identity: its fields and each file's name and hash, so the random boundary
    and the order of the parts do not count."""
    try:
        form = form or forms.parse(content, content_type)
    except forms.NotAForm:
        m = _BOUNDARY.search(content_type)
        return content.replace(m.group(1).encode(), b"BOUNDARY") if m else content
    files = {
        name: [[u.filename, hashlib.sha256(u.data).hexdigest()] for u in uploads]
        for name, uploads in form.files.items()
    }
    return _canonical_json({**form.fields, "(files)": files}, rules)


def as_json(body: bytes) -> Any:
    """A body as JSON where it is JSON, else its bytes; None when empty."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body


def differing_fields(a: Any, b: Any, rules: KeyRules) -> list[str]:
    """The top-level fields where two JSON bodies differ (ignored ones aside); ["body"] when
    either is not a JSON object and they differ."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [] if a == b else ["body"]
    keys = (set(a) | set(b)) - set(rules.ignore_fields)
    return sorted(k for k in keys if a.get(k) != b.get(k))
