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
import random
import re
import textwrap
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
from mitmproxy import http

from . import text, wire
from .config import RequestContext

# Analysis is due READY_BASE_S after the request plus READY_PER_10KB_S per 10 KB of document.
# Small on purpose: the SDK waits 1 s before its first poll, so most tests see one poll.
READY_BASE_S = 0.5
READY_PER_10KB_S = 0.01
URL_SOURCE_BYTES = 100_000  # the size assumed for a document given by URL (it is never fetched)
RETRY_AFTER_S = 1  # whole seconds: the SDK reads Retry-After as an integer
MAX_RESULTS = 1000  # analyses kept; the oldest are dropped past this
MAX_PAGES = 20  # pages in one made-up result, to keep answers a sane size
BYTES_PER_PAGE = 200_000  # page-count guess for documents without countable page objects
MAX_DOCUMENT_BYTES = 500 * 1024 * 1024  # the S0 tier's file limit

FORMRECOGNIZER = "formrecognizer"
DOCUMENTINTELLIGENCE = "documentintelligence"
# api-versions each path family serves; another version there gets the gateway's 404, as in Azure.
API_VERSIONS = {
    FORMRECOGNIZER: frozenset({"2021-09-30-preview", "2022-01-30-preview", "2022-06-30-preview", "2022-08-31",
                               "2023-02-28-preview", "2023-07-31"}),
    DOCUMENTINTELLIGENCE: frozenset({"2023-10-31-preview", "2024-02-29-preview", "2024-07-31-preview",
                                     "2024-11-30"}),
}
READ, LAYOUT, DOCUMENT = "prebuilt-read", "prebuilt-layout", "prebuilt-document"
INVOICE, RECEIPT = "prebuilt-invoice", "prebuilt-receipt"
ID_DOCUMENT, BUSINESS_CARD = "prebuilt-idDocument", "prebuilt-businessCard"
MODELS = frozenset({READ, LAYOUT, DOCUMENT, INVOICE, RECEIPT, ID_DOCUMENT, BUSINESS_CARD})
STRING_INDEX_TYPES = frozenset({"textElements", "unicodeCodePoint", "utf16CodeUnit"})

_PATH = re.compile(r"^/(formrecognizer|documentintelligence)/documentModels/([^/:]+)"
                   r"(?::(analyze)|/analyzeResults/([^/]+))/?$", re.IGNORECASE)
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
        return {"error": {"code": self.code, "message": self.message,
                          "innererror": {"code": self.inner_code, "message": self.inner_message}}}


def model_not_found() -> Invalid:
    return Invalid(404, "NotFound", "Resource not found.", "ModelNotFound", "The requested model was not found.")


def result_not_found() -> Invalid:
    return Invalid(404, "NotFound", "Resource not found.", "OperationNotFound",
                   "The requested operation was not found. The identifier may be invalid or the operation may "
                   "have expired.")


def _source_missing() -> Invalid:
    return Invalid(400, "InvalidArgument", "Invalid argument.", "ParameterMissing",
                   "The parameter urlSource or base64Source is required.")


def _bad_parameter(name: str) -> Invalid:
    return Invalid(400, "InvalidArgument", "Invalid argument.", "InvalidParameter",
                   f"The parameter {name} is invalid.")


def _bad_content() -> Invalid:
    return Invalid(400, "InvalidRequest", "Invalid request.", "InvalidContent",
                   "The file is corrupted or format is unsupported. Refer to documentation for the list of "
                   "supported formats.")


def _too_large() -> Invalid:
    return Invalid(400, "InvalidRequest", "Invalid request.", "InvalidContentLength",
                   "The input image is too large. Refer to documentation for the maximum file size.")


# --- paths and requests ---------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    family: str  # formrecognizer or documentintelligence
    model_id: str
    result_id: str | None  # None: an analyze request


def parse_path(path: str) -> Route | None:
    """The Document Intelligence operation a request path (query allowed) names, if any."""
    m = _PATH.match(unquote(path.partition("?")[0]))
    if m is None:
        return None
    return Route(m.group(1).lower(), m.group(2), None if m.group(3) else m.group(4))


def parse_pages(spec: str) -> list[int]:
    """The `pages` query ("1-3,5,7-9"), as sorted page numbers; Invalid if malformed."""
    numbers: set[int] = set()
    for part in spec.split(","):
        m = _PAGES.match(part)
        if m is None:
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
        if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
            raise _bad_parameter("urlSource")
        return Source(None, url, "")
    if not body:
        raise _bad_content()
    return Source(body, None, mime)


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

@dataclass
class Analysis:
    result_id: str
    family: str
    model_id: str
    api_version: str
    string_index_type: str
    page_numbers: list[int]
    unit: str
    seed: int
    created: float  # epoch seconds
    ready: float  # epoch seconds when it succeeds


class ResultStore:
    """Analyses by result id, oldest dropped past `limit`."""

    def __init__(self, limit: int = MAX_RESULTS):
        self.limit = limit
        self._items: OrderedDict[str, Analysis] = OrderedDict()

    def add(self, analysis: Analysis) -> None:
        self._items[analysis.result_id] = analysis
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def get(self, result_id: str) -> Analysis | None:
        return self._items.get(result_id)

    def __len__(self) -> int:
        return len(self._items)


def iso_time(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(analysis: Analysis, now: float) -> dict:
    """What a poll answers at `now`."""
    if now < analysis.ready:
        return {"status": "running", "createdDateTime": iso_time(analysis.created),
                "lastUpdatedDateTime": iso_time(now)}
    return {"status": "succeeded", "createdDateTime": iso_time(analysis.created),
            "lastUpdatedDateTime": iso_time(analysis.ready), "analyzeResult": build_result(analysis)}


# --- made-up results ---------------------------------------------------------------------------

PAGE_INCHES = (8.5, 11.0)
PIXELS_PER_INCH = 200
MARGIN = 1.0
TEXT_WIDTH = PAGE_INCHES[0] - 2 * MARGIN
CHAR_WIDTH = 0.08  # inches; 75 characters fill the text width
LINE_HEIGHT = 0.2
LINE_STEP = 0.28
GAP = 0.14
WRAP = int(TEXT_WIDTH / CHAR_WIDTH) - 6
CELL_HEIGHT = 0.32


@dataclass
class Value:
    """A typed field value: its type, the value key(s) Azure uses for it, and its text."""

    type: str
    typed: dict
    content: str


def string_value(s: str) -> Value:
    return Value("string", {"valueString": s}, s)


def date_value(d: datetime.date) -> Value:
    return Value("date", {"valueDate": d.isoformat()}, d.strftime("%m/%d/%Y"))


def time_value(hour: int, minute: int) -> Value:
    return Value("time", {"valueTime": f"{hour:02d}:{minute:02d}:00"}, f"{hour:02d}:{minute:02d}")


def currency_value(amount: float) -> Value:
    return Value("currency", {"valueCurrency": {"currencySymbol": "$", "amount": amount, "currencyCode": "USD"}},
                 f"${amount:,.2f}")


def number_value(n: float) -> Value:
    return Value("number", {"valueNumber": n}, f"{n:g}")


class _Fake:
    """Made-up names, places and amounts from one random generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.corpus = text.corpus("cl100k_base")

    def words(self, n: int) -> str:
        return self.corpus.words(self.rng, n)

    def name(self, n: int = 1) -> str:
        return " ".join(w.capitalize() for w in self.words(n).split()[:n])

    def sentences(self, n: int) -> str:
        first = self.corpus.first_text
        return " ".join(first[self.rng.randrange(len(first))] for _ in range(n))

    def company(self) -> str:
        return f"{self.name(2)} {self.rng.choice(['Ltd.', 'Inc.', 'LLC', 'GmbH'])}"

    def date(self) -> datetime.date:
        return datetime.date(2024, 1, 1) + datetime.timedelta(days=self.rng.randrange(730))

    def money(self, low: float, high: float) -> float:
        return round(self.rng.uniform(low, high), 2)

    def address(self) -> Value:
        number, road = str(self.rng.randint(1, 9999)), f"{self.name()} {self.rng.choice(['St', 'Ave', 'Rd'])}"
        city, state, postal = self.name(), self.rng.choice(["WA", "NY", "CA", "TX"]), f"{self.rng.randrange(10**5):05d}"
        return Value("address", {"valueAddress": {"houseNumber": number, "road": road, "postalCode": postal,
                                                  "city": city, "state": state, "streetAddress": f"{number} {road}",
                                                  "countryRegion": "USA"}},
                     f"{number} {road}, {city}, {state} {postal}")

    def phone(self) -> Value:
        digits = f"555{self.rng.randrange(10**7):07d}"
        return Value("phoneNumber", {"valuePhoneNumber": "+1" + digits},
                     f"({digits[:3]}) {digits[3:6]}-{digits[6:]}")

    def confidence(self, low: float = 0.9) -> float:
        return round(self.rng.uniform(low, 0.999), 3)


@dataclass
class _Place:
    offset: int
    length: int
    polygon: list[float]


class _Builder:
    """Writes lines onto pages, keeping `content`, words, lines and their spans in step."""

    def __init__(self, fake: _Fake, unit: str):
        self.fake = fake
        self.unit = unit
        self.scale = 1.0 if unit == "inch" else float(PIXELS_PER_INCH)
        self._chunks: list[str] = []
        self.length = 0
        self.pages: list[dict] = []
        self.paragraphs: list[dict] = []
        self.y = MARGIN
        self._page_start: int | None = None
        self._page_end = 0

    @property
    def content(self) -> str:
        return "".join(self._chunks)

    @property
    def page_number(self) -> int:
        return self.pages[-1]["pageNumber"]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        digits = 4 if self.unit == "inch" else 0
        return [round(v * self.scale, digits) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]

    def trimmed(self, place: _Place, chars: int) -> _Place:
        """`place` without its last `chars` characters."""
        polygon = list(place.polygon)
        polygon[2] = polygon[4] = round(polygon[2] - chars * CHAR_WIDTH * self.scale, 4 if self.unit == "inch" else 0)
        return _Place(place.offset, place.length - chars, polygon)

    def region(self, polygon: list[float]) -> list[dict]:
        return [{"pageNumber": self.page_number, "polygon": polygon}]

    def new_page(self, number: int) -> None:
        self.end_page()
        width, height = PAGE_INCHES
        self.pages.append({"pageNumber": number, "angle": 0, "width": round(width * self.scale, 4),
                           "height": round(height * self.scale, 4), "unit": self.unit,
                           "words": [], "lines": [], "spans": []})
        self._page_start = None
        self.y = MARGIN

    def end_page(self) -> None:
        if self.pages and self._page_start is not None:
            self.pages[-1]["spans"] = [{"offset": self._page_start, "length": self._page_end - self._page_start}]

    def room_for(self, lines: int) -> bool:
        return self.y + lines * LINE_STEP <= PAGE_INCHES[1] - MARGIN

    def line(self, parts: list[str], x: float, y: float) -> tuple[_Place, list[_Place]]:
        """One line of `parts` joined by spaces at (x, y): where the line and each part are."""
        line_text = " ".join(parts)
        if self.length:
            self._chunks.append("\n")  # lines are separated by newlines in `content`
            self.length += 1
        offset = self.length
        self._chunks.append(line_text)
        self.length += len(line_text)
        if self._page_start is None:
            self._page_start = offset
        self._page_end = self.length
        page = self.pages[-1]
        position = 0
        for word in line_text.split(" "):
            if word:
                page["words"].append({
                    "content": word,
                    "polygon": self.box(x + position * CHAR_WIDTH, y, x + (position + len(word)) * CHAR_WIDTH,
                                        y + LINE_HEIGHT),
                    "confidence": self.fake.confidence(), "span": {"offset": offset + position, "length": len(word)}})
            position += len(word) + 1
        whole = _Place(offset, len(line_text), self.box(x, y, x + len(line_text) * CHAR_WIDTH, y + LINE_HEIGHT))
        page["lines"].append({"content": line_text, "polygon": whole.polygon,
                              "spans": [{"offset": offset, "length": len(line_text)}]})
        places, start = [], 0
        for part in parts:
            places.append(_Place(offset + start, len(part),
                                 self.box(x + start * CHAR_WIDTH, y, x + (start + len(part)) * CHAR_WIDTH,
                                          y + LINE_HEIGHT)))
            start += len(part) + 1
        return whole, places

    def paragraph(self, body: str, role: str | None = None) -> bool:
        """A paragraph wrapped into lines; False (nothing written) when the page is full."""
        lines = textwrap.wrap(body, WRAP) or [body]
        if not self.room_for(len(lines)):
            return False
        top, first = self.y, None
        for line_text in lines:
            place, _ = self.line([line_text], MARGIN, self.y)
            first = place.offset if first is None else first
            self.y += LINE_STEP
        widest = max(len(line_text) for line_text in lines)
        content = "\n".join(lines)
        paragraph: dict[str, Any] = {"role": role} if role else {}
        paragraph.update({"spans": [{"offset": first, "length": len(content)}],
                          "boundingRegions": self.region(self.box(MARGIN, top, MARGIN + widest * CHAR_WIDTH,
                                                                  self.y - LINE_STEP + LINE_HEIGHT)),
                          "content": content})
        self.paragraphs.append(paragraph)
        self.y += GAP
        return True

    def form_line(self, parts: list[str], x: float = MARGIN) -> tuple[_Place, list[_Place]]:
        """A one-line paragraph of label and values, as forms have."""
        whole, places = self.line(parts, x, self.y)
        self.paragraphs.append({"spans": [{"offset": whole.offset, "length": whole.length}],
                                "boundingRegions": self.region(whole.polygon), "content": " ".join(parts)})
        self.y += LINE_STEP
        return whole, places

    def field(self, value: Value, place: _Place) -> dict:
        return {"type": value.type, **value.typed, "content": value.content,
                "boundingRegions": self.region(place.polygon), "confidence": self.fake.confidence(0.8),
                "spans": [{"offset": place.offset, "length": place.length}]}

    def labelled(self, label: str | None, value: Value) -> dict:
        """A "Label: value" line; the field for its value."""
        _, places = self.form_line([label, value.content] if label else [value.content])
        return self.field(value, places[-1])

    def row(self, values: list[Value]) -> tuple[dict, list[dict]]:
        """A line of several values (an item row); the object place and each value's field."""
        whole, places = self.form_line([v.content for v in values])
        element = {"content": " ".join(v.content for v in values), "boundingRegions": self.region(whole.polygon),
                   "confidence": self.fake.confidence(0.8), "spans": [{"offset": whole.offset, "length": whole.length}]}
        return element, [self.field(v, p) for v, p in zip(values, places, strict=True)]

    def table(self, rows: int, columns: int) -> dict | None:
        """A grid of cells, a header row first; each cell is a line and a paragraph."""
        if not self.room_for(int(rows * CELL_HEIGHT / LINE_STEP) + 1):
            return None
        top, width = self.y, TEXT_WIDTH / columns
        fit = int((width - 0.1) / CHAR_WIDTH)
        cells, first, end = [], None, 0
        for r in range(rows):
            for c in range(columns):
                if r == 0:
                    cell_text = self.fake.name(2)
                elif c == columns - 1:
                    cell_text = f"{self.fake.money(1, 999):,.2f}"
                else:
                    cell_text = self.fake.words(self.fake.rng.randint(1, 3))
                cell_text = cell_text[:fit].strip() or "-"
                x, y = MARGIN + c * width, top + r * CELL_HEIGHT
                place, _ = self.line([cell_text], x + 0.05, y + 0.06)
                first = place.offset if first is None else first
                end = place.offset + place.length
                cell_box = self.region(self.box(x, y, x + width, y + CELL_HEIGHT))
                self.paragraphs.append({"spans": [{"offset": place.offset, "length": place.length}],
                                        "boundingRegions": cell_box, "content": cell_text})
                cell: dict[str, Any] = {"kind": "columnHeader"} if r == 0 else {}
                cell.update({"rowIndex": r, "columnIndex": c, "content": cell_text, "boundingRegions": cell_box,
                             "spans": [{"offset": place.offset, "length": place.length}],
                             "elements": [f"/paragraphs/{len(self.paragraphs) - 1}"]})
                cells.append(cell)
        self.y = top + rows * CELL_HEIGHT + 2 * GAP
        return {"rowCount": rows, "columnCount": columns, "cells": cells,
                "boundingRegions": self.region(self.box(MARGIN, top, MARGIN + TEXT_WIDTH, top + rows * CELL_HEIGHT)),
                "spans": [{"offset": first, "length": end - first}]}

    def fill(self, paragraphs: int) -> None:
        for _ in range(paragraphs):
            if not self.paragraph(self.fake.sentences(self.fake.rng.randint(1, 4))):
                return


def _document(b: _Builder, doc_type: str, write: Callable[[_Builder, _Fake], dict]) -> dict:
    """A `documents` entry: the fields `write` puts on the current page, and where they are."""
    start = b.length + (1 if b.length else 0)
    fields = write(b, b.fake)
    width, height = PAGE_INCHES
    return {"docType": doc_type, "boundingRegions": b.region(b.box(0, 0, width, height)), "fields": fields,
            "confidence": b.fake.confidence(0.95), "spans": [{"offset": start, "length": b.length - start}]}


def _items(b: _Builder, fake: _Fake, count: int, receipt: bool) -> tuple[list[dict], float]:
    elements, subtotal = [], 0.0
    for _ in range(count):
        quantity = fake.rng.randint(1, 5)
        price = fake.money(2, 250)
        amount = round(quantity * price, 2)
        subtotal += amount
        description = string_value(fake.words(fake.rng.randint(1, 3)).capitalize())
        if receipt:
            names, values = ["Quantity", "Description", "TotalPrice"], [number_value(quantity), description,
                                                                        currency_value(amount)]
        else:
            names, values = ["Description", "Quantity", "UnitPrice", "Amount"], [
                description, number_value(quantity), currency_value(price), currency_value(amount)]
        element, fields = b.row(values)
        elements.append({"type": "object", "valueObject": dict(zip(names, fields, strict=True)), **element})
    return elements, round(subtotal, 2)


def _invoice(b: _Builder, fake: _Fake) -> dict:
    b.form_line(["INVOICE"])
    fields = {"VendorName": b.labelled("Vendor:", string_value(fake.company())),
              "VendorAddress": b.labelled("Address:", fake.address()),
              "CustomerName": b.labelled("Bill to:", string_value(fake.company())),
              "CustomerId": b.labelled("Customer ID:", string_value(f"CID-{fake.rng.randrange(10**5):05d}")),
              "InvoiceId": b.labelled("Invoice ID:", string_value(f"INV-{fake.rng.randrange(10**6):06d}"))}
    issued = fake.date()
    fields["InvoiceDate"] = b.labelled("Invoice Date:", date_value(issued))
    fields["DueDate"] = b.labelled("Due Date:", date_value(issued + datetime.timedelta(days=30)))
    fields["PurchaseOrder"] = b.labelled("PO Number:", string_value(f"PO-{fake.rng.randrange(10**4):04d}"))
    b.form_line(["Description", "Qty", "Unit Price", "Amount"])
    items, subtotal = _items(b, fake, fake.rng.randint(1, 4), receipt=False)
    fields["Items"] = {"type": "array", "valueArray": items}
    tax = round(subtotal * 0.08, 2)
    fields["SubTotal"] = b.labelled("Subtotal:", currency_value(subtotal))
    fields["TotalTax"] = b.labelled("Tax:", currency_value(tax))
    fields["InvoiceTotal"] = b.labelled("Total:", currency_value(round(subtotal + tax, 2)))
    fields["AmountDue"] = b.labelled("Amount Due:", currency_value(round(subtotal + tax, 2)))
    return fields


def _receipt(b: _Builder, fake: _Fake) -> dict:
    fields = {"MerchantName": b.labelled(None, string_value(fake.company())),
              "MerchantAddress": b.labelled(None, fake.address()),
              "MerchantPhoneNumber": b.labelled(None, fake.phone())}
    when = [date_value(fake.date()), time_value(fake.rng.randint(7, 22), fake.rng.randrange(60))]
    _, (date_field, time_field) = b.row(when)
    fields["TransactionDate"], fields["TransactionTime"] = date_field, time_field
    items, subtotal = _items(b, fake, fake.rng.randint(1, 5), receipt=True)
    fields["Items"] = {"type": "array", "valueArray": items}
    tax, tip = round(subtotal * 0.1, 2), round(subtotal * 0.15, 2)
    fields["Subtotal"] = b.labelled("Subtotal", currency_value(subtotal))
    fields["TotalTax"] = b.labelled("Tax", currency_value(tax))
    fields["Tip"] = b.labelled("Tip", currency_value(tip))
    fields["Total"] = b.labelled("Total", currency_value(round(subtotal + tax + tip, 2)))
    # Inferred rather than read: no content or spans, as Azure gives it.
    fields["CountryRegion"] = {"type": "countryRegion", "valueCountryRegion": "USA", "confidence": fake.confidence()}
    return fields


def _id_document(b: _Builder, fake: _Fake) -> dict:
    b.form_line(["DRIVER", "LICENSE"])
    born = fake.date() - datetime.timedelta(days=365 * fake.rng.randint(18, 70))
    return {"Region": b.labelled(None, string_value(fake.name())),
            "DocumentNumber": b.labelled("DL", string_value(f"D{fake.rng.randrange(10**8):08d}")),
            "LastName": b.labelled("LN", string_value(fake.name())),
            "FirstName": b.labelled("FN", string_value(fake.name())),
            "DateOfBirth": b.labelled("DOB", date_value(born)),
            "DateOfExpiration": b.labelled("EXP", date_value(fake.date() + datetime.timedelta(days=1500))),
            "Sex": b.labelled("SEX", string_value(fake.rng.choice(["F", "M", "X"]))),
            "Address": b.labelled(None, fake.address()),
            "CountryRegion": {"type": "countryRegion", "valueCountryRegion": "USA", "confidence": fake.confidence()}}


def _business_card(b: _Builder, fake: _Fake) -> dict:
    element, (first, last) = b.row([string_value(fake.name()), string_value(fake.name())])
    contact = {"type": "object", "valueObject": {"FirstName": first, "LastName": last}, **element}

    def listed(label: str | None, value: Value) -> dict:
        return {"type": "array", "valueArray": [b.labelled(label, value)]}

    return {"ContactNames": {"type": "array", "valueArray": [contact]},
            "JobTitles": listed(None, string_value(fake.name(2))),
            "CompanyNames": listed(None, string_value(fake.company())),
            "Emails": listed(None, string_value(f"{fake.name().lower()}@example.com")),
            "MobilePhones": listed("mobile", fake.phone()),
            "Addresses": listed(None, fake.address())}


_DOCUMENT_MODELS: dict[str, tuple[str, Callable[[_Builder, _Fake], dict]]] = {
    INVOICE: ("invoice", _invoice),
    RECEIPT: ("receipt.retailMeal", _receipt),
    ID_DOCUMENT: ("idDocument.driverLicense", _id_document),
    BUSINESS_CARD: ("businessCard", _business_card),
}


def _key_value_pairs(b: _Builder, fake: _Fake, count: int) -> list[dict]:
    pairs = []
    for _ in range(count):
        key = fake.name(2)
        value = fake.words(fake.rng.randint(1, 4))
        _, (labelled, value_place) = b.form_line([f"{key}:", value])
        key_place = b.trimmed(labelled, 1)  # the key without its colon
        pairs.append({
            "key": {"content": key, "boundingRegions": b.region(key_place.polygon),
                    "spans": [{"offset": key_place.offset, "length": key_place.length}]},
            "value": {"content": value, "boundingRegions": b.region(value_place.polygon),
                      "spans": [{"offset": value_place.offset, "length": value_place.length}]},
            "confidence": fake.confidence(0.5)})
    return pairs


def build_result(analysis: Analysis) -> dict:
    """The analyzeResult of an analysis: the same every time for the same analysis."""
    fake = _Fake(random.Random(analysis.seed))
    b = _Builder(fake, analysis.unit)
    model = analysis.model_id
    with_tables = model in (LAYOUT, DOCUMENT)
    tables: list[dict] = []
    documents: list[dict] = []
    pairs: list[dict] = []
    for index, number in enumerate(analysis.page_numbers):
        b.new_page(number)
        if index == 0 and model in _DOCUMENT_MODELS:
            doc_type, write = _DOCUMENT_MODELS[model]
            documents.append(_document(b, doc_type, write))
        elif model != READ:
            b.paragraph(fake.name(3), "title" if index == 0 else "sectionHeading")
        if index == 0 and model == DOCUMENT:
            pairs = _key_value_pairs(b, fake, fake.rng.randint(2, 4))
        b.fill(fake.rng.randint(1, 3))
        if with_tables:
            table = b.table(fake.rng.randint(3, 5), fake.rng.randint(2, 4))
            if table is not None:
                tables.append(table)
        b.fill(fake.rng.randint(1, 3))
    b.end_page()
    result: dict[str, Any] = {"apiVersion": analysis.api_version, "modelId": model,
                              "stringIndexType": analysis.string_index_type, "content": b.content,
                              "pages": b.pages}
    if with_tables:
        result["tables"] = tables
    result["paragraphs"] = b.paragraphs
    result["styles"] = []
    if model == DOCUMENT:
        result["keyValuePairs"] = pairs
    if analysis.family == DOCUMENTINTELLIGENCE:
        result["contentFormat"] = "text"
    if documents:
        result["documents"] = documents
    return result


# --- the generator ---------------------------------------------------------------------------

def _client_base(flow: http.HTTPFlow) -> str:
    """The scheme and host the client used (the listener keeps the client's Host header)."""
    scheme = "https" if flow.client_conn.tls_established else "http"
    return f"{scheme}://{flow.request.host_header or flow.request.pretty_host}"


def _seed(context: RequestContext, source: Source, model_id: str) -> int:
    """SIMULATOR_SEED makes a document's result reproducible; else every analysis differs."""
    if context.config.seed is None:
        return random.getrandbits(64)
    digest = zlib.crc32(source.data if source.data is not None else (source.url or "").encode())
    return random.Random(f"{context.config.seed}:{digest}:{model_id}").getrandbits(64)


class DocumentIntelligence:
    """Analyze and poll; timings None read the module's READY_* values at each request."""

    def __init__(self, store: ResultStore | None = None, ready_base_s: float | None = None,
                 ready_per_10kb_s: float | None = None, clock: Callable[[], float] = time.time):
        self.store = store if store is not None else ResultStore()
        self.ready_base_s = ready_base_s
        self.ready_per_10kb_s = ready_per_10kb_s
        self.clock = clock

    def __call__(self, context: RequestContext) -> http.Response | None:
        request = context.request
        route = parse_path(request.path)
        if route is None or request.method != ("POST" if route.result_id is None else "GET"):
            return None
        version = request.query.get("api-version")
        if version not in API_VERSIONS[route.family]:
            return wire.not_found(request)
        region = context.config.region
        try:
            if route.model_id not in MODELS:
                raise model_not_found()
            if route.result_id is None:
                return self.analyze(context, route, version)
            return self.poll(context, route)
        except Invalid as e:
            return wire.json_response(e.status, e.body(), request, region)

    def analyze(self, context: RequestContext, route: Route, version: str) -> http.Response:
        request = context.request
        body = request.raw_content or b""
        if len(body) > MAX_DOCUMENT_BYTES:
            raise _too_large()
        source = read_source(request.headers.get("content-type", ""), request.content or b"")
        if source.data is not None and len(source.data) > MAX_DOCUMENT_BYTES:
            raise _too_large()
        pages = request.query.get("pages")
        page_numbers = parse_pages(pages) if pages else list(range(1, estimate_pages(source) + 1))
        index_type = request.query.get("stringIndexType")
        now = self.clock()
        delay = 0.0
        if context.config.latency_enabled:
            base = READY_BASE_S if self.ready_base_s is None else self.ready_base_s
            per_10kb = READY_PER_10KB_S if self.ready_per_10kb_s is None else self.ready_per_10kb_s
            delay = ready_seconds(source.size, base, per_10kb)
        analysis = Analysis(str(uuid.uuid4()), route.family, route.model_id, version,
                            index_type if index_type in STRING_INDEX_TYPES else "textElements",
                            page_numbers, page_unit(source), _seed(context, source, route.model_id), now, now + delay)
        self.store.add(analysis)
        context.values["document_model"] = route.model_id
        context.values["result_id"] = analysis.result_id
        location = (f"{_client_base(context.flow)}/{route.family}/documentModels/{quote(route.model_id, safe='')}"
                    f"/analyzeResults/{analysis.result_id}?api-version={quote(version, safe='')}")
        headers = wire.azure_headers(request, context.config.region, "")
        del headers["content-type"]  # the 202 has no body
        headers["Operation-Location"] = location
        headers["Retry-After"] = str(RETRY_AFTER_S)
        return http.Response.make(202, b"", headers)

    def poll(self, context: RequestContext, route: Route) -> http.Response:
        analysis = self.store.get(route.result_id or "")
        if analysis is None or analysis.model_id != route.model_id:
            raise result_not_found()
        context.values["document_model"] = route.model_id
        body = status_body(analysis, self.clock())
        headers = {"Retry-After": str(RETRY_AFTER_S)} if body["status"] == "running" else None
        return wire.json_response(200, body, context.request, context.config.region, headers)


def make_generator(store: ResultStore | None = None, ready_base_s: float | None = None,
                   ready_per_10kb_s: float | None = None,
                   clock: Callable[[], float] = time.time) -> Callable[[RequestContext], http.Response | None]:
    """A generator with its own store and timings, e.g. for
    `config.replace_generator("document_intelligence", make_generator(ready_base_s=5))`."""
    service = DocumentIntelligence(store, ready_base_s, ready_per_10kb_s, clock)

    def document_intelligence(context: RequestContext) -> http.Response | None:
        return service(context)

    document_intelligence.service = service  # type: ignore[attr-defined]
    return document_intelligence


SERVICE = DocumentIntelligence()


def document_intelligence(context: RequestContext) -> http.Response | None:
    """The built-in generator: Document Intelligence analyze and poll requests, else None."""
    return SERVICE(context)
