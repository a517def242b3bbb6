"""Audio, images, forms and the image store as plain logic, without a proxy."""

from __future__ import annotations

import io
import itertools
import random
import tracemalloc

import pytest
from media import png, tone
from PIL import Image

from aoai.openai import audio, catalogue, forms, images, tokens
from aoai.openai.forms import Form, Upload
from aoai.openai.validation import Invalid
from aoai.runtime import config as cfg
from aoai.runtime import limits, routes
from aoai.runtime.media import ImageStore
from aoai.runtime.recording import KeyRules, body_fingerprint

WHISPER, TRANSCRIBE_4O = catalogue.MODELS["whisper"], catalogue.MODELS["gpt-4o-transcribe"]


def form(file: Upload | None = None, **fields: str | list[str]) -> Form:
    values = {k: v if isinstance(v, list) else [v] for k, v in fields.items()}
    return Form(values, {"file": [file]} if file else {})


def wav_upload(seconds: float = 2.0, name: str = "a.wav") -> Upload:
    return Upload("file", name, "audio/wav", tone("wav", seconds))


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


# --- forms ---------------------------------------------------------------------------------


def test_a_form_is_parsed_into_fields_and_files():
    body = multipart(
        "xyz",
        [
            ("model", None, b"whisper"),
            ("timestamp_granularities[]", None, b"word"),
            ("timestamp_granularities[]", None, b"segment"),
            ("file", "a.wav", b"RIFF...."),
        ],
    )
    parsed = forms.parse(body, "multipart/form-data; boundary=xyz")
    assert parsed.value("model") == "whisper"
    assert parsed.values("timestamp_granularities") == ["word", "segment"]
    assert parsed.file("file").filename == "a.wav" and parsed.file("file").data == b"RIFF...."
    with pytest.raises(forms.NotAForm):
        forms.parse(b"{}", "application/json")


def test_a_damaged_form_is_refused_never_an_exception():
    rng = random.Random(5)
    body = multipart("xyz", [("file", "a.wav", b"DATA"), ("model", None, b"whisper")])
    for _ in range(500):
        damaged = bytearray(body)
        for _ in range(rng.randrange(1, 6)):
            at = rng.randrange(len(damaged))
            damaged[at : at + rng.randrange(0, 4)] = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 4)))
        try:
            forms.parse(bytes(damaged), "multipart/form-data; boundary=xyz")
        except forms.NotAForm:
            pass


def test_a_field_in_a_charset_python_does_not_know_is_refused_not_a_crash():
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n'
        b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nwhisper\r\n--xyz--\r\n"
    )
    with pytest.raises(forms.NotAForm, match="charset"):
        forms.parse(body, "multipart/form-data; boundary=xyz")


def test_a_part_without_a_type_gets_the_usual_default():
    body = multipart("xyz", [("file", "a.wav", b"RIFF"), ("blank", None, b"")])
    body = body.replace(b'name="blank"', b'name="f2"; filename=""')
    parsed = forms.parse(body, "multipart/form-data; boundary=xyz")
    assert parsed.file("file").content_type == "application/octet-stream"
    assert parsed.file("f2").content_type == "text/plain"  # an empty file name: a text part


def test_an_upload_is_copied_once_as_its_form_is_read():
    data = bytes(range(256)) * (16 * 1024)  # 4 MiB
    body = multipart("xyz", [("model", None, b"whisper"), ("file", "a.wav", data)])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        parsed = forms.parse(body, "multipart/form-data; boundary=xyz")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert parsed.file("file").data == data
    assert peak < 1.25 * len(data)  # read as a stream, it took twice the file


def test_recordings_key_a_form_by_fields_and_file_hash_not_boundary_or_order():
    rules = KeyRules()
    one = multipart("aaa", [("model", None, b"whisper"), ("file", "a.wav", b"sound")])
    two = multipart("bbb", [("file", "a.wav", b"sound"), ("model", None, b"whisper")])
    other = multipart("aaa", [("model", None, b"whisper"), ("file", "a.wav", b"noise")])

    def key(body: bytes, boundary: str) -> bytes:
        return body_fingerprint(body, f"multipart/form-data; boundary={boundary}", rules)

    assert key(one, "aaa") == key(two, "bbb") != key(other, "aaa")


# --- transcriptions ------------------------------------------------------------------------


def test_the_duration_is_read_from_the_file_and_junk_is_refused():
    assert audio.duration_of(tone("mp3", 2.5)) == pytest.approx(2.5, abs=0.1)
    assert audio.duration_of(b"not audio at all" * 10) is None
    assert audio.duration_of(png()) is None  # an image holds no audio stream


@pytest.mark.parametrize(
    "bad, param, status",
    [
        (form(response_format="json"), "file", 400),
        (form(wav_upload(name="a.txt")), None, 400),
        (form(Upload("file", "a.wav", "audio/wav", b"junk" * 100)), None, 400),
        (form(wav_upload(), response_format="xml"), "response_format", 400),
        (form(wav_upload(), temperature="2"), "temperature", 400),
        (form(wav_upload(), timestamp_granularities=["word"]), "timestamp_granularities[]", 400),
    ],
)
def test_bad_transcription_requests(bad, param, status):
    with pytest.raises(Invalid) as refused:
        audio.check_audio_request(bad, WHISPER, audio.TRANSCRIBE)
    assert refused.value.param == param and refused.value.status == status


def test_gpt_4o_transcribe_writes_json_or_text_only_and_does_not_translate():
    with pytest.raises(Invalid, match="not compatible"):
        audio.check_audio_request(form(wav_upload(), response_format="vtt"), TRANSCRIBE_4O, audio.TRANSCRIBE)
    with pytest.raises(Invalid, match="translations"):
        audio.check_audio_request(form(wav_upload()), TRANSCRIBE_4O, audio.TRANSLATE)


def test_a_transcript_spreads_its_words_over_the_duration():
    script = audio.transcript(60.0, random.Random(3))
    words = script.words
    assert len(words) == 150  # 2.5 words a second
    assert words[0].start == 0 and words[-1].end <= 60.0 and words[-1].end > 59
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))
    assert [s.id for s in script.segments] == list(range(len(script.segments)))
    assert script.text.endswith(".")


def test_srt_and_vtt_times():
    script = audio.transcript(3725.5, random.Random(1))  # over an hour
    assert "\n01:02:0" in audio.srt(script) and "," in audio.srt(script).splitlines()[1]
    assert audio.vtt(script).startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_usage_counts_audio_at_ten_tokens_a_second():
    request = audio.check_audio_request(form(wav_upload(2.0)), TRANSCRIBE_4O, audio.TRANSCRIBE)
    script = audio.transcript(request.duration, random.Random(1))
    spent = audio.usage(request, script, TRANSCRIBE_4O)
    assert spent["input_token_details"]["audio_tokens"] == 20
    assert spent["total_tokens"] == spent["input_tokens"] + spent["output_tokens"]
    assert audio.usage(request, script, WHISPER) is None


# --- speech --------------------------------------------------------------------------------


def test_speech_length_follows_words_and_speed():
    assert audio.speech_seconds(25, 1.0) == 10.0
    assert audio.speech_seconds(25, 2.0) == 5.0
    assert audio.speech_seconds(0, 1.0) == 0.5
    data, content_type = audio.synthesize(audio.SpeechRequest("one two three four five", "alloy", "pcm", 1.0))
    assert content_type == "audio/pcm" and len(data) == 2 * 24000 * 2


@pytest.mark.parametrize(
    "body, param",
    [
        ({"voice": "alloy"}, "input"),
        ({"input": "hi"}, "voice"),
        ({"input": "hi", "voice": "bob"}, "voice"),
        ({"input": "hi", "voice": "alloy", "speed": 5}, "speed"),
        ({"input": "hi", "voice": "alloy", "instructions": "calm"}, "instructions"),
    ],
)
def test_bad_speech_requests(body, param):
    with pytest.raises(Invalid) as refused:
        audio.check_speech(body, catalogue.MODELS["tts"])
    assert refused.value.param == param


# --- images --------------------------------------------------------------------------------


def test_dall_e_3_defaults_and_drawing():
    request = images.check_generation({"prompt": "a fox"}, catalogue.MODELS["dall-e-3"])
    assert (request.size, request.quality, request.style, request.response_format) == (
        "1024x1024",
        "standard",
        "vivid",
        "url",
    )
    picture = Image.open(io.BytesIO(images.draw(request, 0, "s")))
    assert picture.format == "PNG" and picture.size == (1024, 1024)
    assert images.draw(request, 0, "s") == images.draw(request, 0, "s") != images.draw(request, 1, "s")


def test_gpt_image_1_resolves_auto_and_counts_tokens():
    request = images.check_generation({"prompt": "a fox", "n": 3}, catalogue.MODELS["gpt-image-1"])
    assert (request.size, request.quality, request.response_format) == ("1024x1024", "high", "b64_json")
    assert images.usage(request, 4)["output_tokens"] == 3 * 4160
    with pytest.raises(Invalid, match="jpeg"):
        images.check_generation(
            {"prompt": "x", "background": "transparent", "output_format": "jpeg"}, catalogue.MODELS["gpt-image-1"]
        )


def test_an_edit_needs_a_readable_image():
    model = catalogue.MODELS["gpt-image-1"]
    good = Form({"prompt": ["hat"]}, {"image[]": [Upload("image[]", "a.png", "image/png", png(40, 80))]})
    assert images.check_edit(good, model).size == "1024x1536"
    bad = Form({"prompt": ["hat"]}, {"image": [Upload("image", "a.png", "image/png", b"junk")]})
    with pytest.raises(Invalid, match="image 1"):
        images.check_edit(bad, model)
    with pytest.raises(Invalid) as refused:
        images.check_edit(good, catalogue.MODELS["dall-e-3"])
    assert refused.value.param == "model"


def test_the_image_store_expires_and_stays_bounded():
    now = [1000.0]
    store = ImageStore(ttl=60, max_bytes=250, clock=lambda: now[0])
    first, _ = store.put(b"a" * 100, "image/png", "png")
    second, _ = store.put(b"b" * 100, "image/png", "png")
    third, _ = store.put(b"c" * 100, "image/png", "png")
    assert store.get(first) is None and store.get(second).data == b"b" * 100 and store.bytes == 200
    now[0] += 61
    assert store.get(third) is None
    store.put(b"d", "image/png", "png")
    assert len(store) == 1


# --- deployments and quotas ----------------------------------------------------------------


def test_audio_and_image_deployments_get_azures_request_quota_by_default():
    whisper = cfg.parse_deployment("w", {"model": "whisper"}, "w")
    assert whisper.requests_per_minute == 3 and whisper.pace == WHISPER.audio_pace
    images_dep = cfg.parse_deployment("d", {"model": "dall-e-3", "requestsPerMinute": 30}, "d")
    assert images_dep.requests_per_minute == 30
    assert cfg.parse_deployment("p", {"model": "whisper", "audioPace": 0.5}, "p").pace == 0.5
    with pytest.raises(cfg.ConfigError, match="audioPace"):
        cfg.parse_deployment("c", {"model": "gpt-4o", "audioPace": 0.5}, "c")
    quota = limits.deployment_quota(0, 3, 10.0)
    assert (quota.tokens, quota.requests, quota.request_window) == (0, 1, 20.0)
    assert limits.estimate_tokens("transcriptions", {}, 0) == 0


def test_an_audio_answer_takes_its_request_time_plus_a_share_of_the_audio():
    from aoai.runtime import latency
    from aoai.runtime.routes import TABLE

    deployment = cfg.parse_deployment(
        "w", {"model": "whisper", "audioPace": 0.5, "latency": {"requestMs": {"mean": 100}}}, "w"
    )
    route = TABLE.first("transcriptions")
    assert latency.media_seconds(deployment, route, cfg.SimulatorConfig(), 4.0, random.Random()) == pytest.approx(2.1)
    assert audio.SpeechRequest("one two three four five", "alloy", "mp3", 2.0).duration == 1.0


def test_an_image_form_field_sent_twice_is_read_as_its_first_value():
    # A client that repeats `prompt` must get an answer, not a 500 from counting a list: the
    # body the stages read holds each field as the checks read it.
    form = Form(fields={"prompt": ["a red fox", "ignored"], "n": ["1"]}, files={})
    body = form.summary()
    assert body == {"prompt": "a red fox", "n": "1"}
    route = next(r for r in routes.TABLE.routes if r.operation == "image_edits")
    enc = tokens.encoding("o200k_base")
    assert route.prompt_tokens(body, enc) == tokens.count("a red fox", enc)
    assert route.prompt_texts(body) == ["a red fox"]
