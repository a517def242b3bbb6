"""multipart/form-data bodies (audio uploads, image edits), parsed once into plain fields.

The `multipart` package does the parsing; this module only shapes its parts into what the
checks and generators read: text fields by name, and files with their name and bytes.
"""

from __future__ import annotations

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
    # The body it was read from (that object, not a copy): whoever holds the same bytes may use
    # this form rather than read them again.
    body: bytes | None = field(default=None, repr=False, compare=False)

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

    def summary(self) -> dict[str, str]:
        """The text fields as a plain dictionary, each as the checks read it: a field sent more
        than once is its first value."""
        return {k: v[0] for k, v in self.fields.items() if v}


def boundary_of(content_type: str) -> str | None:
    kind, options = multipart.parse_options_header(content_type or "")
    if kind != "multipart/form-data":
        return None
    return options.get("boundary") or None


def parse(content: bytes, content_type: str) -> Form:
    """The form in a multipart/form-data body; NotAForm when it is not one.

    The body is in memory already, so it is parsed as one piece: each part's data is then one
    slice of it (a 5 MiB upload is copied once, where reading it as a stream copied it three
    times over, through growing buffers).
    """
    boundary = boundary_of(content_type)
    if boundary is None:
        raise NotAForm("Content-Type must be multipart/form-data with a boundary")
    form = Form(body=content)
    try:
        # Leaving the block checks that the form ended (a missing end marker is an error).
        with multipart.PushMultipartParser(boundary, len(content), max_segment_count=MAX_PARTS) as parser:
            segment: multipart.MultipartSegment | None = None
            data: list[bytes] = []
            for event in parser.parse(content):
                if isinstance(event, multipart.MultipartSegment):
                    segment, data = event, []
                elif event is not None:
                    data.append(event)
                else:
                    _add(form, segment, data[0] if len(data) == 1 else b"".join(data))
    except multipart.MultipartError as e:
        raise NotAForm(str(e)) from None
    except UnicodeDecodeError:  # a text field that is not UTF-8
        raise NotAForm("a form field is not valid UTF-8 text") from None
    except LookupError:  # a text field in a charset Python does not know
        raise NotAForm("a form field names an unknown charset") from None
    return form


def _add(form: Form, part: multipart.MultipartSegment, data: bytes) -> None:
    if part.filename is not None:
        # As the multipart package's parts default it, when the part names no type.
        content_type = part.content_type or ("application/octet-stream" if part.filename else "text/plain")
        form.files.setdefault(part.name, []).append(Upload(part.name, part.filename, content_type, data))
    else:
        form.fields.setdefault(part.name, []).append(data.decode(part.charset or "utf8"))
