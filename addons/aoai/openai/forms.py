"""multipart/form-data bodies (audio uploads, image edits), parsed once into plain fields.

The `multipart` package does the parsing; this module only shapes its parts into what the
checks and generators read: text fields by name, and files with their name and bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import multipart

MAX_PARTS = 64  # more than any audio or image request sends


class NotAForm(Exception):
    """The body is not a readable multipart/form-data body."""


@dataclass(frozen=True)
class Upload:
    name: str  # the form field ("file", "image", "image[]", "mask")
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[Upload]] = field(default_factory=dict)

    def value(self, name: str) -> str | None:
        """The first value of a text field (None: not sent)."""
        values = self.fields.get(name)
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        """Every value of a field sent as `name` or `name[]` (arrays in forms)."""
        return self.fields.get(name, []) + self.fields.get(name + "[]", [])

    def file(self, name: str) -> Upload | None:
        uploads = self.uploads(name)
        return uploads[0] if uploads else None

    def uploads(self, name: str) -> list[Upload]:
        return self.files.get(name, []) + self.files.get(name + "[]", [])

    def summary(self) -> dict[str, str | list[str]]:
        """The text fields as a plain dictionary (one value, or a list when repeated)."""
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.fields.items()}


def boundary_of(content_type: str) -> str | None:
    kind, options = multipart.parse_options_header(content_type or "")
    if kind != "multipart/form-data":
        return None
    return options.get("boundary") or None


def parse(content: bytes, content_type: str) -> Form:
    """The form in a multipart/form-data body; NotAForm when it is not one."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise NotAForm("Content-Type must be multipart/form-data with a boundary")
    limit = len(content) + 1024  # the body is in memory already: never spool parts to disk
    parser = multipart.MultipartParser(io.BytesIO(content), boundary, len(content), part_limit=MAX_PARTS,
                                       spool_limit=limit, memory_limit=limit)
    form = Form()
    try:
        for part in parser:
            if part.filename is not None:
                upload = Upload(part.name, part.filename, part.content_type or "", part.raw)
                form.files.setdefault(part.name, []).append(upload)
            else:
                form.fields.setdefault(part.name, []).append(part.value)
            part.close()
    except multipart.MultipartError as e:
        raise NotAForm(str(e)) from None
    except UnicodeDecodeError:  # a text field that is not UTF-8
        raise NotAForm("a form field is not valid UTF-8 text") from None
    return form
