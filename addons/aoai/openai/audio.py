"""Audio: transcriptions and translations of uploaded audio, and speech made from text.

An upload's duration is read with PyAV (FFmpeg), which knows every container Azure accepts,
and believed only as far as the file's bytes can hold it (a header may claim anything); the
transcript is made-up text whose length follows that duration, timed word by word across
it, and written in the format asked (json, text, srt, vtt, verbose_json).
Speech is a quiet tone as long as the text would take to say, encoded by PyAV in the format
asked. Nothing here touches mitmproxy.
"""

from __future__ import annotations

import functools
import io
import math
import random
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from . import text, tokens
from .catalogue import Model
from .forms import Form, Upload
from .validation import Invalid

if TYPE_CHECKING:
    import numpy as np
    from av.audio.stream import AudioStream
    from av.container import InputContainer

# PyAV and NumPy are imported by the functions that use them: together they take half a
# second to import, which every start would pay, and only audio requests need them.

MAX_BODY_BYTES = 25 * 1024 * 1024  # Azure's and OpenAI's limit on an upload's whole request body
# The file extensions Azure accepts, as its error lists them.
FILE_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TEXT_ONLY_FORMATS = ("json", "text")  # what the gpt-4o transcribe models write
GRANULARITIES = ("word", "segment")
WORDS_PER_SECOND = 2.5  # about 150 words a minute: conversational speech
SEGMENT_WORDS = 24  # Whisper's segments run up to ~10 s of speech
AUDIO_TOKENS_PER_SECOND = 10  # gpt-4o audio input: one token per 100 ms

TRANSCRIBE, TRANSLATE = "transcribe", "translate"


# --- Reading uploads -----------------------------------------------------------------------

# The fewest bits a second of compressed audio takes: silence at a codec's lowest setting
# takes about 600 bit/s in AAC, 2,000 to 3,000 in FLAC and Opus. A file whose header claims
# more seconds than its bytes hold at this rate is not believed (2 KB of FLAC can claim 190
# hours); uncompressed audio (PCM) holds exactly its bytes over its byte rate.
MIN_BITS_PER_SECOND = 256


def load_codecs() -> None:
    """Load FFmpeg's libraries (PyAV) now: the first audio request would otherwise load them on
    the event loop (~80 ms, every other request waiting) and its memory would look like that
    request's (~20 MiB of libraries)."""
    import av  # noqa: F401


def duration_of(data: bytes, longest: float = math.inf) -> float | None:
    """Seconds of audio in a file of any container FFmpeg reads, as far as its bytes can hold
    them; None when it holds no audio, or claims more than its bytes can hold. A file without
    a stated length is measured packet by packet, up to just past `longest` seconds."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            bit_rate = stream.codec_context.bit_rate or 0
            pcm = stream.codec_context.name.startswith("pcm_") and bit_rate > 0
            room = len(data) * 8 / (bit_rate if pcm else MIN_BITS_PER_SECOND)
            if stream.duration is not None and stream.time_base is not None:
                claimed = float(stream.duration * stream.time_base)
            elif container.duration:
                claimed = container.duration / av.time_base
            else:  # written without a length (live webm): the packets' lengths, added up
                claimed = _packet_seconds(container, stream, min(longest, room))
    except (av.FFmpegError, ValueError, IndexError, OSError, ArithmeticError):  # hostile files fail many ways
        return None
    if not claimed or not math.isfinite(claimed) or claimed <= 0:
        return None
    if pcm:  # a WAV cut short (or written as a stream) says more than it holds: it lasts what it holds
        return min(claimed, room)
    return claimed if claimed <= room else None


def _packet_seconds(container: InputContainer, stream: AudioStream, enough: float) -> float:
    """The stream's packets' lengths added up, stopping once past `enough` seconds."""
    total, base = 0.0, stream.time_base
    for packet in container.demux(stream):
        if packet.duration:
            total += float(packet.duration * base)
            if total > enough:
                break
    return total


def extension_of(filename: str) -> str:
    return filename.rpartition(".")[2].lower() if "." in filename else ""


@dataclass(frozen=True)
class AudioRequest:
    """A checked transcription or translation request."""

    task: str  # TRANSCRIBE or TRANSLATE
    upload: Upload
    duration: float
    response_format: str
    language: str | None
    prompt: str | None
    temperature: float
    granularities: tuple[str, ...]
    stream: bool


def _text_formats(model: Model) -> tuple[str, ...]:
    return RESPONSE_FORMATS if model.name == "whisper" else TEXT_ONLY_FORMATS


def _float_field(form: Form, name: str, low: float, high: float, default: float) -> float:
    raw = form.value(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(
            f"Invalid type for '{name}': expected a number, but got a string instead.", name, "invalid_type"
        ) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise Invalid(
            f"Invalid '{name}': number must be between {low} and {high}, got {value}.", name, "decimal_out_of_range"
        )
    return value


def _boolean(form: Form, name: str) -> bool:
    raw = (form.value(name) or "false").lower()
    if raw not in ("true", "false"):
        raise Invalid(f"Invalid type for '{name}': expected a boolean, but got a string instead.", name, "invalid_type")
    return raw == "true"


def _choice(value: str, name: str, values: tuple[str, ...]) -> None:
    if value not in values:
        listed = ", ".join(f"'{v}'" for v in values[:-1]) + f", and '{values[-1]}'"
        raise Invalid(f"Invalid value: '{value}'. Supported values are: {listed}.", name, "invalid_value")


def check_upload(form: Form, longest: float = math.inf) -> tuple[Upload, float]:
    """The audio file and its duration, or Azure's error for what is wrong with it (or for
    lasting longer than `longest` seconds)."""
    upload = form.file("file")
    if upload is None:
        raise Invalid("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    # OpenAI's own bodies for these name no param or code.
    if extension_of(upload.filename) not in FILE_FORMATS:
        raise Invalid(f"Invalid file format. Supported formats: {list(FILE_FORMATS)}")
    seconds = duration_of(upload.data, longest)
    if not seconds or seconds <= 0:
        raise Invalid("The audio file could not be decoded or its format is not supported.")
    if seconds > longest:
        raise Invalid(f"The audio file is too long: it lasts more than the {longest:g} seconds this resource accepts.")
    return upload, seconds


def check_audio_request(form: Form, model: Model, task: str, longest: float = math.inf) -> AudioRequest:
    """A transcription (or translation) form, checked as Azure checks it."""
    response_format = form.value("response_format") or "json"
    _choice(response_format, "response_format", RESPONSE_FORMATS)
    if response_format not in _text_formats(model):
        raise Invalid(
            f"response_format '{response_format}' is not compatible with model '{model.name}'. Use 'json' or 'text'.",
            "response_format",
            "unsupported_value",
        )
    if task == TRANSLATE and model.name != "whisper":
        raise Invalid(
            f"The translations operation does not work with the specified model, {model.name}. "
            "Please choose a whisper deployment.",
            "model",
            "unsupported_value",
        )
    granularities = tuple(form.values("timestamp_granularities"))
    for value in granularities:
        _choice(value, "timestamp_granularities[]", GRANULARITIES)
    if granularities and response_format != "verbose_json":
        raise Invalid(
            "timestamp_granularities[] is only supported with response_format 'verbose_json'.",
            "timestamp_granularities[]",
            "invalid_value",
        )
    stream = _boolean(form, "stream")
    if stream and model.name == "whisper":
        raise Invalid("Streaming is not supported for the whisper model.", "stream", "unsupported_value")
    temperature = _float_field(form, "temperature", 0, 1, 0.0)
    upload, seconds = check_upload(form, longest)
    language = form.value("language") if task == TRANSCRIBE else None
    return AudioRequest(
        task,
        upload,
        seconds,
        response_format,
        language or None,
        form.value("prompt"),
        temperature,
        granularities or ("segment",),
        stream,
    )


# --- Transcripts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass
class Segment:
    id: int
    start: float
    end: float
    words: list[Word]
    tokens: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " " + " ".join(w.word for w in self.words)


@dataclass
class Transcript:
    duration: float
    segments: list[Segment]
    language: str

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def text(self) -> str:
        return " ".join(" ".join(w.word for w in s.words) for s in self.segments)


def _word_list(rng: random.Random, count: int) -> list[str]:
    sentences = text.corpus("cl100k_base").first_text
    words: list[str] = []
    i = rng.randrange(len(sentences))
    while len(words) < count:
        words.extend(sentences[i].split())
        i = (i + 1) % len(sentences)
    words = words[:count]
    if not words[-1].endswith("."):
        words[-1] = words[-1].rstrip(",;") + "."
    return words


def transcript(
    duration: float, rng: random.Random, language: str = "english", words_per_second: float = WORDS_PER_SECOND
) -> Transcript:
    """Made-up speech spread over `duration` seconds: a word every 1/words_per_second."""
    count = max(1, round(duration * words_per_second))
    words = _word_list(rng, count)
    step = duration / count
    timed = [Word(w, round(i * step, 2), round(min(duration, (i + 0.9) * step), 2)) for i, w in enumerate(words)]
    enc = text.corpus("cl100k_base").enc
    segments = []
    for n, start in enumerate(range(0, count, SEGMENT_WORDS)):
        chunk = timed[start : start + SEGMENT_WORDS]
        segment = Segment(n, chunk[0].start, chunk[-1].end, chunk)
        segment.tokens = enc.encode(segment.text, disallowed_special=())
        segments.append(segment)
    return Transcript(round(duration, 2), segments, language)


_LANGUAGES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "ja": "japanese",
    "zh": "chinese",
    "ko": "korean",
}


def language_name(code: str | None) -> str:
    """verbose_json names the language in words, as Whisper does ("english")."""
    if not code:
        return "english"
    return _LANGUAGES.get(code.lower(), code.lower())


def _clock(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def srt(script: Transcript) -> str:
    cues = [f"{s.id + 1}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n" for s in script.segments]
    return "\n".join(cues) + "\n"


def vtt(script: Transcript) -> str:
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in script.segments]
    return "WEBVTT\n\n" + "\n".join(cues) + "\n"


def usage(request: AudioRequest, script: Transcript, model: Model) -> dict[str, Any] | None:
    """The `usage` the gpt-4o transcribe models report (Whisper reports none)."""
    if model.name == "whisper":
        return None
    audio = max(1, math.ceil(request.duration * AUDIO_TOKENS_PER_SECOND))
    prompt = tokens.count(request.prompt or "", text.corpus("cl100k_base").enc)
    output = sum(len(s.tokens) for s in script.segments)
    return {
        "type": "tokens",
        "input_tokens": audio + prompt,
        "input_token_details": {"text_tokens": prompt, "audio_tokens": audio},
        "output_tokens": output,
        "total_tokens": audio + prompt + output,
    }


def verbose(request: AudioRequest, script: Transcript) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": request.task,
        "language": script.language,
        "duration": script.duration,
        "text": script.text,
    }
    if "segment" in request.granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": int(s.start * 100),
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": s.tokens,
                "temperature": request.temperature,
                "avg_logprob": -0.25,
                "compression_ratio": 1.4,
                "no_speech_prob": 0.01,
            }
            for s in script.segments
        ]
    if "word" in request.granularities:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in script.words]
    return body


def render(request: AudioRequest, script: Transcript, model: Model) -> tuple[Any, str]:
    """The answer in the format asked: a JSON value (json, verbose_json) or text, and its type."""
    fmt = request.response_format
    if fmt == "json":
        body: dict[str, Any] = {"text": script.text}
        spent = usage(request, script, model)
        if spent:
            body["usage"] = spent
        return body, "application/json"
    if fmt == "verbose_json":
        return verbose(request, script), "application/json"
    if fmt == "srt":
        return srt(script), "text/plain; charset=utf-8"
    if fmt == "vtt":
        return vtt(script), "text/vtt; charset=utf-8"
    return script.text + "\n", "text/plain; charset=utf-8"


def stream_events(request: AudioRequest, script: Transcript, model: Model) -> list[dict[str, Any]]:
    """The events of a streamed transcription: a delta per word, then the whole text."""
    words = [w.word for w in script.words]
    deltas = [
        {"type": "transcript.text.delta", "delta": (" " if i else "") + w, "logprobs": None}
        for i, w in enumerate(words)
    ]
    done = {
        "type": "transcript.text.done",
        "text": script.text,
        "logprobs": None,
        "usage": usage(request, script, model),
    }
    return deltas + [done]


# --- Speech --------------------------------------------------------------------------------

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MAX_SPEECH_INPUT = 4096
SPEECH_RATE = 24000  # Hz: what OpenAI's voices are sampled at (pcm is 24 kHz 16-bit mono)
# response_format -> (container, codec, sample rate, content type)
_ENCODINGS = {
    "mp3": ("mp3", "libmp3lame", SPEECH_RATE, "audio/mpeg"),
    "opus": ("ogg", "libopus", 48000, "audio/ogg"),
    "aac": ("adts", "aac", SPEECH_RATE, "audio/aac"),
    "flac": ("flac", "flac", SPEECH_RATE, "audio/flac"),
}  # wav and pcm are written here: 16-bit PCM needs no encoder
# The encoders' fastest settings (half the CPU of their defaults): a tone needs no finer search.
_FAST = {"libmp3lame": {"compression_level": "9"}, "libopus": {"compression_level": "0"}}


@dataclass(frozen=True)
class SpeechRequest:
    input: str
    voice: str
    response_format: str
    speed: float

    @property
    def duration(self) -> float:
        """Seconds of speech the input makes."""
        return speech_seconds(len(self.input.split()), self.speed)


def check_speech(body: dict[str, Any], model: Model) -> SpeechRequest:
    """A speech body, checked as Azure checks it."""
    text_in = body.get("input")
    if text_in is None:
        raise Invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if not isinstance(text_in, str):
        raise Invalid(
            f"Invalid type for 'input': expected a string, but got {type(text_in).__name__} instead.",
            "input",
            "invalid_type",
        )
    if len(text_in) > MAX_SPEECH_INPUT:
        raise Invalid(
            f"Invalid 'input': string too long. Expected a string with maximum length "
            f"{MAX_SPEECH_INPUT}, but got a string with length {len(text_in)} instead.",
            "input",
            "string_above_max_length",
        )
    voice = body.get("voice")
    if voice is None:
        raise Invalid("Missing required parameter: 'voice'.", "voice", "missing_required_parameter")
    _choice(str(voice), "voice", VOICES)
    fmt = body.get("response_format") or "mp3"
    _choice(str(fmt), "response_format", SPEECH_FORMATS)
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise Invalid(
            f"Invalid type for 'speed': expected a number, but got {type(speed).__name__} instead.",
            "speed",
            "invalid_type",
        )
    if not 0.25 <= speed <= 4.0:
        raise Invalid(
            f"Invalid 'speed': number must be between 0.25 and 4.0, got {speed}.", "speed", "decimal_out_of_range"
        )
    if body.get("instructions") is not None and model.name != "gpt-4o-mini-tts":
        raise Invalid(f"instructions are not supported for model '{model.name}'.", "instructions", "unsupported_value")
    return SpeechRequest(text_in, str(voice), str(fmt), float(speed))


def speech_seconds(words: int, speed: float) -> float:
    """How long saying `words` words takes at `speed` (at least half a second)."""
    return max(0.5, words / (WORDS_PER_SECOND * speed))


@functools.lru_cache(maxsize=64)
def _second(rate: int, voice: str) -> np.ndarray:
    """One second of a soft tone, pitched by the voice so voices sound apart. The pitch is a
    whole number of hertz, so seconds follow each other without a seam: long speech repeats
    this one second instead of computing (and holding) every sample."""
    import numpy as np

    pitch = 160 + 20 * VOICES.index(voice) if voice in VOICES else 200
    t = np.arange(rate) / rate
    return (np.sin(2 * np.pi * pitch * t) * 2000).astype("<i2")


def _pcm(samples: int, rate: int, voice: str) -> list[bytes]:
    """`samples` samples of the tone as 16-bit little-endian PCM, in one-second pieces that
    share one buffer (joined once, into the answer itself)."""
    second = _second(rate, voice).tobytes()
    whole, rest = divmod(samples, rate)
    return [second] * whole + ([second[: rest * 2]] if rest else [])


def _wav_header(data_bytes: int, rate: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV file."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


UNCOMPRESSED = ("wav", "pcm")


def uncompressed(request: SpeechRequest) -> tuple[list[bytes], str]:
    """A wav or pcm answer (pcm: raw 24 kHz signed 16-bit little-endian mono) in pieces of a
    second, the first with the WAV header; the pieces share one second's buffer, so a long
    answer can be sent piece by piece without ever being held whole."""
    pieces = _pcm(int(request.duration * SPEECH_RATE), SPEECH_RATE, request.voice)
    if request.response_format == "pcm":
        return pieces, "audio/pcm"
    header = _wav_header(sum(len(p) for p in pieces), SPEECH_RATE)
    return [header + pieces[0], *pieces[1:]], "audio/wav"


def synthesize(request: SpeechRequest) -> tuple[bytes, str]:
    """Audio as long as the input takes to say, in the format asked, and its content type.
    Made a second at a time: what it holds besides the answer stays the same at any length."""
    if request.response_format in UNCOMPRESSED:
        pieces, content_type = uncompressed(request)
        return b"".join(pieces), content_type
    seconds = request.duration
    import av

    container_format, codec, rate, content_type = _ENCODINGS[request.response_format]
    second = _second(rate, request.voice).reshape(1, -1)
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        # Every codec in _ENCODINGS is an audio codec.
        stream = cast(
            "AudioStream", container.add_stream(codec, rate=rate, layout="mono", options=_FAST.get(codec, {}))
        )
        total = int(seconds * rate)
        for start in range(0, total, rate):
            frame = av.AudioFrame.from_ndarray(second[:, : min(rate, total - start)], format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue(), content_type
