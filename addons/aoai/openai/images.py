"""Images: generations (dall-e-3, gpt-image-1) and edits (gpt-image-1), checked as Azure
checks them and answered with real image files drawn and encoded by Pillow.

dall-e-3 makes one PNG per request and answers with a URL or base64, a revised prompt and
content-filter results; gpt-image-1 makes up to ten images in PNG, JPEG or WebP, always as
base64, and reports its usage in tokens. Nothing here touches mitmproxy.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
from dataclasses import dataclass
from typing import Any

from .catalogue import Model
from .forms import Form, Upload
from .validation import Invalid

DALL_E_3, GPT_IMAGE_1 = "dall-e-3", "gpt-image-1"


@dataclass(frozen=True)
class Rules:
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    max_n: int
    max_prompt: int  # characters


RULES = {
    DALL_E_3: Rules(("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd"), 1, 4000),
    GPT_IMAGE_1: Rules(("1024x1024", "1536x1024", "1024x1536", "auto"), ("low", "medium", "high", "auto"), 10, 32000),
}
STYLES = ("vivid", "natural")
RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
MAX_IMAGE_BYTES = 25 * 1024 * 1024  # gpt-image-1 edits: each image under 25 MB
MAX_EDIT_BODY_BYTES = 4 * MAX_IMAGE_BYTES  # a request with several images
MAX_EDIT_IMAGES = 16
DEFAULT_MAX_PIXELS = 36_000_000  # IMAGE_MAX_PIXELS: an edit's input images, width times height
# Output tokens gpt-image-1 bills for one image, by quality and size (OpenAI's published table).
OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
IMAGE_TOKENS_PER_INPUT = 323  # what one input image costs an edit (a 1024x1024 tile grid)
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class ImageRequest:
    model: str
    prompt: str
    n: int
    size: str  # "WxH" (auto resolved)
    quality: str
    style: str | None
    response_format: str  # url or b64_json
    output_format: str
    background: str | None
    inputs: tuple[Upload, ...] = ()  # edits: the images to change

    @property
    def width(self) -> int:
        return int(self.size.partition("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.partition("x")[2])

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.output_format]


def _listed(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _choice(value: Any, name: str, values: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in values:
        raise Invalid(f"Invalid value: '{value}'. Supported values are: {_listed(values)}.", name, "invalid_value")
    return value


def _rules(model: Model) -> Rules:
    return RULES.get(model.name, RULES[DALL_E_3])


def _prompt(value: Any, rules: Rules) -> str:
    if value is None:
        raise Invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if not isinstance(value, str):
        raise Invalid(
            f"Invalid type for 'prompt': expected a string, but got {type(value).__name__} instead.",
            "prompt",
            "invalid_type",
        )
    if not value:
        raise Invalid(
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty string instead.",
            "prompt",
            "empty_string",
        )
    if len(value) > rules.max_prompt:
        raise Invalid(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{rules.max_prompt}, but got a string with length {len(value)} instead.",
            "prompt",
            "string_above_max_length",
        )
    return value


def _count(value: Any, rules: Rules, model: Model) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(
            f"Invalid type for 'n': expected an integer, but got {type(value).__name__} instead.", "n", "invalid_type"
        )
    if rules.max_n == 1 and value != 1:
        raise Invalid(f"You must provide n=1 for the model {model.name}.", "n", "invalid_value")
    if not 1 <= value <= rules.max_n:
        raise Invalid(
            f"Invalid 'n': integer must be between 1 and {rules.max_n}, got {value}.", "n", "integer_out_of_range"
        )
    return value


def _gpt_image_only(fields: dict[str, Any], model: Model) -> None:
    """Options the two models do not share are refused by name, as Azure refuses them."""
    if model.name == GPT_IMAGE_1:
        if fields.get("response_format") is not None:
            raise Invalid(
                f"Unknown parameter: 'response_format'. It is not supported with {model.name}; "
                "images are always returned as b64_json.",
                "response_format",
                "unknown_parameter",
            )
        if fields.get("style") is not None:
            raise Invalid(
                f"Unknown parameter: 'style'. It is not supported with {model.name}.", "style", "unknown_parameter"
            )
    else:
        for name in ("output_format", "output_compression", "background", "moderation"):
            if fields.get(name) is not None:
                raise Invalid(
                    f"Unknown parameter: '{name}'. It is only supported with gpt-image-1.", name, "unknown_parameter"
                )


def _request(
    fields: dict[str, Any], model: Model, inputs: tuple[Upload, ...] = (), input_size: tuple[int, int] | None = None
) -> ImageRequest:
    rules = _rules(model)
    prompt = _prompt(fields.get("prompt"), rules)
    _gpt_image_only(fields, model)
    n = _count(fields.get("n"), rules, model)
    size = fields.get("size") or ("auto" if model.name == GPT_IMAGE_1 else "1024x1024")
    if model.name == DALL_E_3 and size not in rules.sizes:
        raise Invalid("The size is not supported by this model.", None, "invalid_size")  # OpenAI's words
    size = _choice(size, "size", rules.sizes)
    quality_default = "auto" if model.name == GPT_IMAGE_1 else "standard"
    quality = _choice(fields.get("quality") or quality_default, "quality", rules.qualities)
    if model.name == GPT_IMAGE_1:
        if size == "auto":
            size = _closest_size(input_size) if input_size else "1024x1024"
        if quality == "auto":
            quality = "high"
        output_format = _choice(fields.get("output_format") or "png", "output_format", OUTPUT_FORMATS)
        background = _choice(fields.get("background") or "auto", "background", BACKGROUNDS)
        if background == "transparent" and output_format == "jpeg":
            raise Invalid(
                "Transparent background is not supported for output_format 'jpeg'.", "background", "invalid_value"
            )
        return ImageRequest(model.name, prompt, n, size, quality, None, "b64_json", output_format, background, inputs)
    style = _choice(fields.get("style") or "vivid", "style", STYLES)
    response_format = _choice(fields.get("response_format") or "url", "response_format", RESPONSE_FORMATS)
    return ImageRequest(model.name, prompt, n, size, quality, style, response_format, "png", None, inputs)


def _closest_size(size: tuple[int, int]) -> str:
    width, height = size
    if width > height * 1.2:
        return "1536x1024"
    if height > width * 1.2:
        return "1024x1536"
    return "1024x1024"


def check_generation(body: dict[str, Any], model: Model) -> ImageRequest:
    """An images/generations body, checked as Azure checks it."""
    return _request(body, model)


def _form_number(form: Form, name: str) -> Any:
    raw = form.value(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        return raw  # refused by the count check with the type it has


def check_edit(form: Form, model: Model, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageRequest:
    """An images/edits form: one or more images (and a mask) to change with a prompt; an image
    of more than `max_pixels` pixels is refused from its header, before anything decodes it."""
    if model.name != GPT_IMAGE_1:
        raise Invalid(
            f"The images edit operation does not work with the specified model, {model.name}.",
            "model",
            "unsupported_value",
        )
    uploads = tuple(form.uploads("image"))
    if not uploads:
        raise Invalid("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len(uploads) > MAX_EDIT_IMAGES:
        raise Invalid(
            f"Invalid 'image': array too long. Expected an array with maximum length {MAX_EDIT_IMAGES}, "
            f"but got an array with length {len(uploads)} instead.",
            "image",
            "array_above_max_length",
        )
    first_size = None
    for index, upload in enumerate(uploads):
        size = image_size(upload.data) if len(upload.data) <= MAX_IMAGE_BYTES else None
        if size is None:
            raise Invalid(
                f"Invalid image file or mode for image {index + 1}, please check your image file.",
                "image",
                "invalid_image_format",
            )
        if size[0] * size[1] > max_pixels:
            raise Invalid(
                f"Invalid image file or mode for image {index + 1}, please check your image file: it has "
                f"{size[0]}x{size[1]} pixels, more than the {max_pixels} accepted.",
                "image",
                "invalid_image_format",
            )
        first_size = first_size or size
    mask = form.file("mask")
    if mask is not None and image_size(mask.data) != first_size:
        raise Invalid(
            "Invalid mask image: it must be a PNG of the same size as the image.", "mask", "invalid_image_format"
        )
    fields: dict[str, Any] = {k: form.value(k) for k in form.fields if not k.endswith("[]")}
    fields["n"] = _form_number(form, "n")
    return _request(fields, model, uploads, first_size)


def image_size(data: bytes) -> tuple[int, int] | None:
    """An image file's width and height, read from its header (nothing is decoded); None when
    Pillow cannot read it, or will not: past 178M pixels it takes the file for a decompression
    bomb (a 22-byte JPEG header can claim 65535x65535)."""
    from PIL import Image  # here: only image requests pay for loading Pillow

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            return image.size
    except Exception:  # hostile files fail in many ways (struct, EOF, index, syntax errors, bombs)
        return None


# --- Drawing -------------------------------------------------------------------------------


def draw(request: ImageRequest, index: int, seed: str) -> bytes:
    """One image of the requested size and format: a gradient and shapes chosen by the prompt,
    so different prompts look different and the same one looks the same."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(f"{seed}:{request.prompt}:{index}".encode()).digest()
    rng = random.Random(digest)
    width, height = request.width, request.height
    top = tuple(digest[:3])
    bottom = tuple(digest[3:6])
    # A vertical gradient drawn on a one-pixel column and stretched: fast at any size.
    column = Image.new("RGB", (1, 256))
    column.putdata([tuple(int(a + (b - a) * y / 255) for a, b in zip(top, bottom, strict=False)) for y in range(256)])
    image = column.resize((width, height))
    pen = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(width // 16, width // 4)
        pen.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    if request.output_format == "jpeg":
        image.save(out, format="JPEG", quality=85)
    elif request.output_format == "webp":
        image.save(out, format="WEBP", quality=80)
    else:
        if request.background == "transparent":
            image = image.convert("RGBA")
        image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def revised_prompt(prompt: str) -> str:
    """dall-e-3 rewrites every prompt into a fuller description before drawing."""
    return (
        f"{prompt.rstrip('.')}. The scene is rendered in rich detail with balanced composition, soft natural "
        "light and a clear focal point."
    )


_SAFE = {"filtered": False, "severity": "safe"}


def content_filter_results() -> dict[str, Any]:
    return {k: dict(_SAFE) for k in ("hate", "self_harm", "sexual", "violence")}


def prompt_filter_results() -> dict[str, Any]:
    return {
        **content_filter_results(),
        "profanity": {"filtered": False, "detected": False},
        "jailbreak": {"filtered": False, "detected": False},
    }


def usage(request: ImageRequest, prompt_tokens: int) -> dict[str, Any]:
    """gpt-image-1's usage: prompt and input images in, image tokens out."""
    per_image = OUTPUT_TOKENS[request.quality].get(request.size, OUTPUT_TOKENS[request.quality]["1024x1024"])
    image_tokens = IMAGE_TOKENS_PER_INPUT * len(request.inputs)
    output = per_image * request.n
    return {
        "input_tokens": prompt_tokens + image_tokens,
        "output_tokens": output,
        "total_tokens": prompt_tokens + image_tokens + output,
        "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": image_tokens},
    }


def answer(
    request: ImageRequest,
    images: list[bytes],
    urls: list[str] | None,
    created: int,
    prompt_tokens: int,
    prompt_filter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response body: each image as base64 or a URL, with what the model adds;
    `prompt_filter`: the prompt's content-filter results, when a rule scored it."""
    data = []
    for index, image in enumerate(images):
        item: dict[str, Any] = {}
        if request.response_format == "url" and urls is not None:
            item["url"] = urls[index]
        else:
            item["b64_json"] = base64.b64encode(image).decode()
        if request.model == DALL_E_3:
            item["revised_prompt"] = revised_prompt(request.prompt)
            item["content_filter_results"] = content_filter_results()
            item["prompt_filter_results"] = {**prompt_filter_results(), **(prompt_filter or {})}
        data.append(item)
    body: dict[str, Any] = {"created": created, "data": data}
    if request.model == GPT_IMAGE_1:
        body.update(
            background=request.background,
            output_format=request.output_format,
            quality=request.quality,
            size=request.size,
            usage=usage(request, prompt_tokens),
        )
    return body
