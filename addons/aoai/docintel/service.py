"""Azure AI Document Intelligence (and its older Form Recognizer paths) in generate mode.

    POST /{documentintelligence|formrecognizer}/documentModels/{model}:analyze?api-version=…
        -> 202, empty body, Operation-Location pointing at the result
    GET  /{…}/documentModels/{model}/analyzeResults/{resultId}?api-version=…
        -> {"status": "running"} until the analysis is due, then "succeeded" with an analyzeResult

The document is never read for its text: the result is made up (lorem-like text at made-up
positions), shaped like the prebuilt model's, and every span indexes into `content`. Only a
seed and a few numbers are stored per analysis; the result is rebuilt from them on each poll,
so the store stays small however large the documents are.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from .layout import DOCUMENTINTELLIGENCE, FORMRECOGNIZER, Analysis, build_result

# Analysis is due READY_BASE_S after the request plus READY_PER_10KB_S per 10 KB of document.
# Small on purpose: the SDK waits 1 s before its first poll, so most tests see one poll.
READY_BASE_S = 0.5
READY_PER_10KB_S = 0.01
URL_SOURCE_BYTES = 100_000  # the size assumed for a document given by URL (it is never fetched)
RETRY_AFTER_S = 1  # whole seconds: the SDK reads Retry-After as an integer
MAX_RESULTS = 1000  # analyses kept; the oldest are dropped past this
RESULTS_MAX_BYTES = 32 * 1024 * 1024  # DOC_INTELLIGENCE_RESULTS_MAX_BYTES's default
MAX_PAGES = 20  # pages in one made-up result, to keep answers a sane size
BYTES_PER_PAGE = 200_000  # page-count guess for documents without countable page objects
MAX_DOCUMENT_BYTES = 500 * 1024 * 1024  # the S0 tier's file limit
MAX_URL_CHARS = 8192  # a document's URL (Azure's request line would not carry a longer one)
MAX_PAGE_RANGES = 100  # ranges in the `pages` query ("1-3,5,…")

# api-versions each path family serves; another version there gets the gateway's 404, as in Azure.
API_VERSIONS = {
    FORMRECOGNIZER: frozenset(
        {
            "2021-09-30-preview",
            "2022-01-30-preview",
            "2022-06-30-preview",
            "2022-08-31",
            "2023-02-28-preview",
            "2023-07-31",
        }
    ),
    DOCUMENTINTELLIGENCE: frozenset({"2023-10-31-preview", "2024-02-29-preview", "2024-07-31-preview", "2024-11-30"}),
}
STRING_INDEX_TYPES = frozenset({"textElements", "unicodeCodePoint", "utf16CodeUnit"})

_PAGES = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?!\w)")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8", b"RIFF")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".heif", ".webp")


# --- errors ---------------------------------------------------------------------------------


class Invalid(Exception):
    """A request Azure would refuse: status, the outer error and the inner one."""

    def __init__(self, status: int, code: str, message: str, inner_code: str, inner_message: str):
        super().__init__(inner_message)
        self.status, self.code, self.message = status, code, message
        self.inner_code, self.inner_message = inner_code, inner_message

    def body(self) -> dict:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "innererror": {"code": self.inner_code, "message": self.inner_message},
            }
        }


def model_not_found() -> Invalid:
    return Invalid(404, "NotFound", "Resource not found.", "ModelNotFound", "The requested model was not found.")


def result_not_found() -> Invalid:
    return Invalid(
        404,
        "NotFound",
        "Resource not found.",
        "OperationNotFound",
        "The requested operation was not found. The identifier may be invalid or the operation may have expired.",
    )


def _source_missing() -> Invalid:
    return Invalid(
        400,
        "InvalidArgument",
        "Invalid argument.",
        "ParameterMissing",
        "The parameter urlSource or base64Source is required.",
    )


def _bad_parameter(name: str) -> Invalid:
    return Invalid(400, "InvalidArgument", "Invalid argument.", "InvalidParameter", f"The parameter {name} is invalid.")


def _bad_content() -> Invalid:
    return Invalid(
        400,
        "InvalidRequest",
        "Invalid request.",
        "InvalidContent",
        "The file is corrupted or format is unsupported. Refer to documentation for the list of supported formats.",
    )


def too_large() -> Invalid:
    return Invalid(
        400,
        "InvalidRequest",
        "Invalid request.",
        "InvalidContentLength",
        "The input image is too large. Refer to documentation for the maximum file size.",
    )


# --- requests ----------------------------------------------------------------------------


def parse_pages(spec: str) -> list[int]:
    """The `pages` query ("1-3,5,7-9"), as sorted page numbers; Invalid if malformed."""
    numbers: set[int] = set()
    parts = spec.split(",")
    if len(parts) > MAX_PAGE_RANGES:
        raise _bad_parameter("pages")
    for part in parts:
        m = _PAGES.match(part)
        if m is None or len(m.group(1)) > 9 or len(m.group(2) or "") > 9:  # past any document's pages
            raise _bad_parameter("pages")
        first = int(m.group(1))
        last = int(m.group(2) or first)
        if first < 1 or last < first:
            raise _bad_parameter("pages")
        numbers.update(range(first, min(last, first + MAX_PAGES) + 1))
    return sorted(numbers)[:MAX_PAGES]


@dataclass
class Source:
    """What an analyze request gave: the document's bytes, or only its URL."""

    data: bytes | None
    url: str | None
    content_type: str

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else URL_SOURCE_BYTES


def read_source(content_type: str, body: bytes) -> Source:
    """The document of an analyze request: raw bytes, or JSON with urlSource or base64Source."""
    mime = content_type.partition(";")[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        # A file sent as application/json (the SDK's default content type) lands here too.
        if not isinstance(parsed, dict):
            raise _source_missing()
        if parsed.get("base64Source") is not None:
            encoded = parsed["base64Source"]
            try:
                data = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
            except (binascii.Error, ValueError):
                data = None
            if data is None:
                raise _bad_parameter("base64Source")
            if not data:
                raise _bad_content()
            return Source(data, None, "")
        url = parsed.get("urlSource")
        if url is None:
            raise _source_missing()
        if not web_address(url):
            raise _bad_parameter("urlSource")
        return Source(None, url, "")
    if not body:
        raise _bad_content()
    return Source(body, None, mime)


def web_address(url: object) -> bool:
    """Whether `urlSource` is a URL Azure could fetch: http(s), a host, a valid port, at most
    MAX_URL_CHARS and no spaces or control characters."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS or not url.isprintable() or " " in url:
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # "http://[::1", a port that is not a number or above 65535
        return False


def page_unit(source: Source) -> str:
    """Images are measured in pixels, PDFs and office documents in inches."""
    data = source.data
    if data is not None:
        if data.startswith(b"%PDF"):
            return "inch"
        if source.content_type.startswith("image/") or data.startswith(_IMAGE_MAGIC):
            return "pixel"
        return "inch"
    path = urlsplit(source.url or "").path.lower()
    return "pixel" if path.endswith(_IMAGE_SUFFIXES) else "inch"


def estimate_pages(source: Source) -> int:
    """Pages of the document: its PDF page objects if it has any, else one per BYTES_PER_PAGE."""
    if source.data is not None and source.data.startswith(b"%PDF"):
        found = len(_PDF_PAGE.findall(source.data))
        if found:
            return min(found, MAX_PAGES)
    return max(1, min(MAX_PAGES, 1 + source.size // BYTES_PER_PAGE))


def ready_seconds(size: int, base_s: float, per_10kb_s: float) -> float:
    """How long the analysis of a document of `size` bytes takes."""
    return base_s + per_10kb_s * size / 10_240


# --- analyses in memory ----------------------------------------------------------------------


class ResultStore:
    """Analyses by result id, oldest dropped past `limit` of them or `max_bytes` together
    (DOC_INTELLIGENCE_RESULTS_MAX_BYTES); a dropped one's polls get Azure's 404 for an expired
    operation."""

    def __init__(self, limit: int = MAX_RESULTS, max_bytes: int = RESULTS_MAX_BYTES):
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, tuple[Analysis, int]] = OrderedDict()

    def add(self, analysis: Analysis) -> None:
        self._drop(analysis.result_id)
        size = analysis_bytes(analysis)
        self._items[analysis.result_id] = (analysis, size)
        self.bytes += size
        while self._items and (len(self._items) > self.limit or self.bytes > self.max_bytes):
            self.bytes -= self._items.popitem(last=False)[1][1]

    def get(self, result_id: str) -> Analysis | None:
        kept = self._items.get(result_id)
        return kept[0] if kept is not None else None

    def _drop(self, result_id: str) -> None:
        kept = self._items.pop(result_id, None)
        if kept is not None:
            self.bytes -= kept[1]

    def __len__(self) -> int:
        return len(self._items)

    def usage(self) -> dict:
        """For /++/limits: what the store holds and may hold."""
        return {"count": len(self._items), "maxCount": self.limit, "bytes": self.bytes, "maxBytes": self.max_bytes}


def analysis_bytes(analysis: Analysis) -> int:
    """What an analysis takes in memory (measured: about 500 bytes, and 40 a page); the
    result itself is rebuilt on each poll, never kept."""
    return (
        512
        + 40 * len(analysis.page_numbers)
        + len(analysis.result_id)
        + len(analysis.model_id)
        + len(analysis.api_version)
    )


def iso_time(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(analysis: Analysis, now: float) -> dict:
    """What a poll answers at `now`."""
    if now < analysis.ready:
        return {
            "status": "running",
            "createdDateTime": iso_time(analysis.created),
            "lastUpdatedDateTime": iso_time(now),
        }
    return {
        "status": "succeeded",
        "createdDateTime": iso_time(analysis.created),
        "lastUpdatedDateTime": iso_time(analysis.ready),
        "analyzeResult": build_result(analysis),
    }


# --- the generator ---------------------------------------------------------------------------
