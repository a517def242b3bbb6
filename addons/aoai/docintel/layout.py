"""The made-up layout engine: an analysis result shaped like a prebuilt model's.

Text is lorem-like, placed line by line on letter-size pages in inches (or pixels for
images); tables, key-value pairs and typed document fields are laid out among it, and every
span indexes into `content`. The same analysis (its seed) always gives the same result, so
nothing but the seed needs keeping between polls.
"""

from __future__ import annotations

import datetime
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..openai import text

FORMRECOGNIZER = "formrecognizer"
DOCUMENTINTELLIGENCE = "documentintelligence"
READ, LAYOUT, DOCUMENT = "prebuilt-read", "prebuilt-layout", "prebuilt-document"
INVOICE, RECEIPT = "prebuilt-invoice", "prebuilt-receipt"
ID_DOCUMENT, BUSINESS_CARD = "prebuilt-idDocument", "prebuilt-businessCard"
MODELS = frozenset({READ, LAYOUT, DOCUMENT, INVOICE, RECEIPT, ID_DOCUMENT, BUSINESS_CARD})


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
    return Value(
        "currency",
        {"valueCurrency": {"currencySymbol": "$", "amount": amount, "currencyCode": "USD"}},
        f"${amount:,.2f}",
    )


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
        return Value(
            "address",
            {
                "valueAddress": {
                    "houseNumber": number,
                    "road": road,
                    "postalCode": postal,
                    "city": city,
                    "state": state,
                    "streetAddress": f"{number} {road}",
                    "countryRegion": "USA",
                }
            },
            f"{number} {road}, {city}, {state} {postal}",
        )

    def phone(self) -> Value:
        digits = f"555{self.rng.randrange(10**7):07d}"
        return Value("phoneNumber", {"valuePhoneNumber": "+1" + digits}, f"({digits[:3]}) {digits[3:6]}-{digits[6:]}")

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
        self.pages.append(
            {
                "pageNumber": number,
                "angle": 0,
                "width": round(width * self.scale, 4),
                "height": round(height * self.scale, 4),
                "unit": self.unit,
                "words": [],
                "lines": [],
                "spans": [],
            }
        )
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
                page["words"].append(
                    {
                        "content": word,
                        "polygon": self.box(
                            x + position * CHAR_WIDTH, y, x + (position + len(word)) * CHAR_WIDTH, y + LINE_HEIGHT
                        ),
                        "confidence": self.fake.confidence(),
                        "span": {"offset": offset + position, "length": len(word)},
                    }
                )
            position += len(word) + 1
        whole = _Place(offset, len(line_text), self.box(x, y, x + len(line_text) * CHAR_WIDTH, y + LINE_HEIGHT))
        page["lines"].append(
            {"content": line_text, "polygon": whole.polygon, "spans": [{"offset": offset, "length": len(line_text)}]}
        )
        places, start = [], 0
        for part in parts:
            places.append(
                _Place(
                    offset + start,
                    len(part),
                    self.box(x + start * CHAR_WIDTH, y, x + (start + len(part)) * CHAR_WIDTH, y + LINE_HEIGHT),
                )
            )
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
        paragraph.update(
            {
                "spans": [{"offset": first, "length": len(content)}],
                "boundingRegions": self.region(
                    self.box(MARGIN, top, MARGIN + widest * CHAR_WIDTH, self.y - LINE_STEP + LINE_HEIGHT)
                ),
                "content": content,
            }
        )
        self.paragraphs.append(paragraph)
        self.y += GAP
        return True

    def form_line(self, parts: list[str], x: float = MARGIN) -> tuple[_Place, list[_Place]]:
        """A one-line paragraph of label and values, as forms have."""
        whole, places = self.line(parts, x, self.y)
        self.paragraphs.append(
            {
                "spans": [{"offset": whole.offset, "length": whole.length}],
                "boundingRegions": self.region(whole.polygon),
                "content": " ".join(parts),
            }
        )
        self.y += LINE_STEP
        return whole, places

    def field(self, value: Value, place: _Place) -> dict:
        return {
            "type": value.type,
            **value.typed,
            "content": value.content,
            "boundingRegions": self.region(place.polygon),
            "confidence": self.fake.confidence(0.8),
            "spans": [{"offset": place.offset, "length": place.length}],
        }

    def labelled(self, label: str | None, value: Value) -> dict:
        """A "Label: value" line; the field for its value."""
        _, places = self.form_line([label, value.content] if label else [value.content])
        return self.field(value, places[-1])

    def row(self, values: list[Value]) -> tuple[dict, list[dict]]:
        """A line of several values (an item row); the object place and each value's field."""
        whole, places = self.form_line([v.content for v in values])
        element = {
            "content": " ".join(v.content for v in values),
            "boundingRegions": self.region(whole.polygon),
            "confidence": self.fake.confidence(0.8),
            "spans": [{"offset": whole.offset, "length": whole.length}],
        }
        return element, [self.field(v, p) for v, p in zip(values, places, strict=True)]

    def table(self, rows: int, columns: int) -> dict[str, Any] | None:
        """A grid of cells, a header row first; each cell is a line and a paragraph."""
        if not self.room_for(int(rows * CELL_HEIGHT / LINE_STEP) + 1):
            return None
        top, width = self.y, TEXT_WIDTH / columns
        fit = int((width - 0.1) / CHAR_WIDTH)
        cells: list[dict[str, Any]] = []
        first: int | None = None
        end = 0
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
                self.paragraphs.append(
                    {
                        "spans": [{"offset": place.offset, "length": place.length}],
                        "boundingRegions": cell_box,
                        "content": cell_text,
                    }
                )
                cell: dict[str, Any] = {"kind": "columnHeader"} if r == 0 else {}
                cell.update(
                    {
                        "rowIndex": r,
                        "columnIndex": c,
                        "content": cell_text,
                        "boundingRegions": cell_box,
                        "spans": [{"offset": place.offset, "length": place.length}],
                        "elements": [f"/paragraphs/{len(self.paragraphs) - 1}"],
                    }
                )
                cells.append(cell)
        self.y = top + rows * CELL_HEIGHT + 2 * GAP
        if first is None:  # no cells: no table
            return None
        return {
            "rowCount": rows,
            "columnCount": columns,
            "cells": cells,
            "boundingRegions": self.region(self.box(MARGIN, top, MARGIN + TEXT_WIDTH, top + rows * CELL_HEIGHT)),
            "spans": [{"offset": first, "length": end - first}],
        }

    def fill(self, paragraphs: int) -> None:
        for _ in range(paragraphs):
            if not self.paragraph(self.fake.sentences(self.fake.rng.randint(1, 4))):
                return


def _document(b: _Builder, doc_type: str, write: Callable[[_Builder, _Fake], dict]) -> dict:
    """A `documents` entry: the fields `write` puts on the current page, and where they are."""
    start = b.length + (1 if b.length else 0)
    fields = write(b, b.fake)
    width, height = PAGE_INCHES
    return {
        "docType": doc_type,
        "boundingRegions": b.region(b.box(0, 0, width, height)),
        "fields": fields,
        "confidence": b.fake.confidence(0.95),
        "spans": [{"offset": start, "length": b.length - start}],
    }


def _items(b: _Builder, fake: _Fake, count: int, receipt: bool) -> tuple[list[dict], float]:
    elements, subtotal = [], 0.0
    for _ in range(count):
        quantity = fake.rng.randint(1, 5)
        price = fake.money(2, 250)
        amount = round(quantity * price, 2)
        subtotal += amount
        description = string_value(fake.words(fake.rng.randint(1, 3)).capitalize())
        if receipt:
            names, values = (
                ["Quantity", "Description", "TotalPrice"],
                [number_value(quantity), description, currency_value(amount)],
            )
        else:
            names, values = (
                ["Description", "Quantity", "UnitPrice", "Amount"],
                [description, number_value(quantity), currency_value(price), currency_value(amount)],
            )
        element, fields = b.row(values)
        elements.append({"type": "object", "valueObject": dict(zip(names, fields, strict=True)), **element})
    return elements, round(subtotal, 2)


def _invoice(b: _Builder, fake: _Fake) -> dict:
    b.form_line(["INVOICE"])
    fields = {
        "VendorName": b.labelled("Vendor:", string_value(fake.company())),
        "VendorAddress": b.labelled("Address:", fake.address()),
        "CustomerName": b.labelled("Bill to:", string_value(fake.company())),
        "CustomerId": b.labelled("Customer ID:", string_value(f"CID-{fake.rng.randrange(10**5):05d}")),
        "InvoiceId": b.labelled("Invoice ID:", string_value(f"INV-{fake.rng.randrange(10**6):06d}")),
    }
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
    fields = {
        "MerchantName": b.labelled(None, string_value(fake.company())),
        "MerchantAddress": b.labelled(None, fake.address()),
        "MerchantPhoneNumber": b.labelled(None, fake.phone()),
    }
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
    return {
        "Region": b.labelled(None, string_value(fake.name())),
        "DocumentNumber": b.labelled("DL", string_value(f"D{fake.rng.randrange(10**8):08d}")),
        "LastName": b.labelled("LN", string_value(fake.name())),
        "FirstName": b.labelled("FN", string_value(fake.name())),
        "DateOfBirth": b.labelled("DOB", date_value(born)),
        "DateOfExpiration": b.labelled("EXP", date_value(fake.date() + datetime.timedelta(days=1500))),
        "Sex": b.labelled("SEX", string_value(fake.rng.choice(["F", "M", "X"]))),
        "Address": b.labelled(None, fake.address()),
        "CountryRegion": {"type": "countryRegion", "valueCountryRegion": "USA", "confidence": fake.confidence()},
    }


def _business_card(b: _Builder, fake: _Fake) -> dict:
    element, (first, last) = b.row([string_value(fake.name()), string_value(fake.name())])
    contact = {"type": "object", "valueObject": {"FirstName": first, "LastName": last}, **element}

    def listed(label: str | None, value: Value) -> dict:
        return {"type": "array", "valueArray": [b.labelled(label, value)]}

    return {
        "ContactNames": {"type": "array", "valueArray": [contact]},
        "JobTitles": listed(None, string_value(fake.name(2))),
        "CompanyNames": listed(None, string_value(fake.company())),
        "Emails": listed(None, string_value(f"{fake.name().lower()}@example.com")),
        "MobilePhones": listed("mobile", fake.phone()),
        "Addresses": listed(None, fake.address()),
    }


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
        pairs.append(
            {
                "key": {
                    "content": key,
                    "boundingRegions": b.region(key_place.polygon),
                    "spans": [{"offset": key_place.offset, "length": key_place.length}],
                },
                "value": {
                    "content": value,
                    "boundingRegions": b.region(value_place.polygon),
                    "spans": [{"offset": value_place.offset, "length": value_place.length}],
                },
                "confidence": fake.confidence(0.5),
            }
        )
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
    result: dict[str, Any] = {
        "apiVersion": analysis.api_version,
        "modelId": model,
        "stringIndexType": analysis.string_index_type,
        "content": b.content,
        "pages": b.pages,
    }
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
