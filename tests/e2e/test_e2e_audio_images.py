"""Audio and images end to end: the openai SDK (Azure and v1 clients) against a real mitmdump.

Transcriptions in every response format with real durations, translations, streamed
transcription, speech decoded as the format asked, image generations (base64 and URL) and
edits, each error Azure gives for bad input, pacing by the audio's length and the
requests-per-minute quotas of these deployments.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time

import httpx
import pytest
import srt
import webvtt
from conftest import start_simulator
from helpers import azure, deployment_url, scrape, v1, value
from media import decoded_seconds, png, tone
from openai import BadRequestError, RateLimitError
from PIL import Image

SECONDS = 3.0


@pytest.fixture(scope="module")
def wav() -> bytes:
    return tone("wav", SECONDS)


def upload(sim, path: str, files: dict, data: dict | None = None, deployment: str = "whisper") -> httpx.Response:
    return httpx.post(
        deployment_url(sim, deployment, path), files=files, data=data or {}, headers={"api-key": sim.key}, timeout=60
    )


def openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


# --- transcriptions and translations ------------------------------------------------------


def test_json_and_text_transcriptions_follow_the_audio_length(simulator, wav):
    client = azure(simulator)
    short = client.audio.transcriptions.create(model="whisper", file=("a.wav", wav))
    long = client.audio.transcriptions.create(model="whisper", file=("a.wav", tone("wav", 12.0)))
    assert short.text and len(long.text.split()) >= 3 * len(short.text.split())
    text = client.audio.transcriptions.create(model="whisper", file=("a.wav", wav), response_format="text")
    assert isinstance(text, str) and len(text.split()) == len(short.text.split())


def test_verbose_json_has_segments_and_words_inside_the_duration(simulator, wav):
    answer = azure(simulator).audio.transcriptions.create(
        model="whisper",
        file=("call.mp3", tone("mp3", SECONDS)),
        response_format="verbose_json",
        language="de",
        timestamp_granularities=["word", "segment"],
    )
    assert answer.task == "transcribe" and answer.language == "german"
    assert answer.duration == pytest.approx(SECONDS, abs=0.1)
    assert answer.segments and answer.words
    assert " ".join(w.word for w in answer.words) == answer.text
    for item in [*answer.segments, *answer.words]:
        assert 0 <= item.start < item.end <= answer.duration
    assert answer.segments[-1].end >= answer.duration * 0.8


@pytest.mark.parametrize("response_format", ["srt", "vtt"])
def test_subtitles_parse_and_cover_the_duration(simulator, response_format):
    seconds = 25.0
    body = azure(simulator).audio.transcriptions.create(
        model="whisper", file=("a.flac", tone("flac", seconds)), response_format=response_format
    )
    if response_format == "srt":
        cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in srt.parse(body)]
    else:
        cues = [(c.start_in_seconds, c.end_in_seconds, c.text) for c in webvtt.from_buffer(io.StringIO(body))]
    assert len(cues) >= 2
    assert cues[0][0] == 0 and cues[-1][1] == pytest.approx(seconds, abs=1.0)
    for (start, end, words), after in zip(cues, cues[1:] + [(seconds, seconds, "")], strict=False):
        assert 0 <= start < end <= seconds and end <= after[0] and words


@pytest.mark.parametrize("extension", ["wav", "mp3", "flac", "ogg", "webm", "m4a"])
def test_every_accepted_container_has_its_duration_read(simulator, extension):
    answer = v1(simulator).audio.transcriptions.create(
        model="whisper", file=(f"a.{extension}", tone(extension, 2.0)), response_format="verbose_json"
    )
    assert answer.duration == pytest.approx(2.0, abs=0.15)


def test_translation_is_english_on_both_paths(simulator, wav):
    for client in (azure(simulator), v1(simulator)):
        answer = client.audio.translations.create(model="whisper", file=("a.wav", wav), response_format="verbose_json")
        assert answer.task == "translate" and answer.language == "english" and answer.text
        assert answer.duration == pytest.approx(SECONDS, abs=0.1)


def test_gpt_4o_transcribe_reports_usage_and_streams(simulator, wav):
    client = azure(simulator)
    answer = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav))
    assert answer.text and answer.usage.type == "tokens"
    assert answer.usage.input_token_details.audio_tokens == 30
    events = list(client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=("a.wav", wav), stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert len(deltas) > 3 and done.type == "transcript.text.done"
    assert "".join(deltas) == done.text and done.usage.output_tokens > 0
    with pytest.raises(BadRequestError) as refused:
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav), response_format="srt")
    assert refused.value.body["param"] == "response_format"


def test_bad_uploads_get_azures_errors(simulator, wav):
    path = "audio/transcriptions"
    assert (
        openai_error(upload(simulator, path, {"response_format": (None, "json")}), 400, "file")["code"]
        == "missing_required_parameter"
    )
    not_audio = openai_error(upload(simulator, path, {"file": ("notes.wav", b"these are not samples" * 50)}), 400)
    assert not_audio["message"] == "The audio file could not be decoded or its format is not supported."
    unsupported = openai_error(upload(simulator, path, {"file": ("notes.txt", wav)}), 400)
    assert unsupported["message"] == (
        "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', "
        "'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']"
    )
    too_big = upload(simulator, path, {"file": ("big.wav", wav + bytes(25 * 1024 * 1024))})
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "server_error"
    read = re.fullmatch(
        r"Maximum content size limit \(26214400\) exceeded \((\d+) bytes read\)", too_big.json()["error"]["message"]
    )
    assert read and int(read.group(1)) > 25 * 1024 * 1024 + len(wav)
    unknown = openai_error(
        upload(simulator, path, {"file": ("a.wav", wav)}, {"response_format": "xml"}), 400, "response_format"
    )
    assert unknown["message"] == (
        "Invalid value: 'xml'. Supported values are: 'json', 'text', 'srt', 'verbose_json', and 'vtt'."
    )
    as_json = httpx.post(
        deployment_url(simulator, "whisper", path), json={"file": "a.wav"}, headers={"api-key": simulator.key}
    )
    assert "expected multipart/form-data" in openai_error(as_json, 400)["message"]


# --- speech --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response_format, container",
    [("mp3", "mp3"), ("opus", "ogg"), ("aac", "aac"), ("flac", "flac"), ("wav", "wav"), ("pcm", None)],
)
def test_speech_decodes_as_the_format_asked_and_lasts_as_the_text(simulator, response_format, container):
    words = "The quick brown fox jumps over the lazy dog again and again."
    client = azure(simulator)
    data = client.audio.speech.create(model="tts", voice="alloy", input=words, response_format=response_format).read()
    faster = client.audio.speech.create(
        model="tts", voice="nova", input=words, response_format=response_format, speed=2.0
    ).read()
    if container is None:  # raw 24 kHz 16-bit mono
        seconds, quick = len(data) / 48000, len(faster) / 48000
    else:
        seconds, quick = decoded_seconds(data, container), decoded_seconds(faster, container)
    assert seconds == pytest.approx(len(words.split()) / 2.5, abs=0.3)
    assert quick == pytest.approx(seconds / 2, abs=0.3)


def test_speech_errors(simulator):
    url = deployment_url(simulator, "tts", "audio/speech")
    headers = {"api-key": simulator.key}
    no_voice = httpx.post(url, json={"input": "hi"}, headers=headers)
    assert openai_error(no_voice, 400, "voice")["code"] == "missing_required_parameter"
    bad_format = httpx.post(url, json={"input": "hi", "voice": "alloy", "response_format": "ogg"}, headers=headers)
    assert openai_error(bad_format, 400, "response_format")["code"] == "invalid_value"
    too_long = httpx.post(url, json={"input": "a" * 4097, "voice": "alloy"}, headers=headers)
    assert openai_error(too_long, 400, "input")["code"] == "string_above_max_length"


# --- images --------------------------------------------------------------------------------


def test_dall_e_3_base64_image_has_the_requested_size(simulator):
    answer = azure(simulator).images.generate(
        model="dall-e-3",
        prompt="A lighthouse at dawn",
        size="1792x1024",
        quality="hd",
        style="natural",
        response_format="b64_json",
    )
    item = answer.data[0]
    image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
    assert image.format == "PNG" and image.size == (1792, 1024)
    assert item.revised_prompt.startswith("A lighthouse at dawn")
    raw = item.model_extra
    assert raw["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}
    assert raw["prompt_filter_results"]["jailbreak"] == {"filtered": False, "detected": False}


def test_dall_e_3_url_downloads_from_the_simulator(simulator):
    item = azure(simulator).images.generate(model="dall-e-3", prompt="A red bicycle", size="1024x1792").data[0]
    assert item.url.startswith(simulator.url + "/++/images/") and "se=" in item.url
    download = httpx.get(item.url)  # no key: the URL itself is the permission, as Azure's signed blob URLs
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(download.content)).size == (1024, 1792)
    assert httpx.get(simulator.url + "/++/images/0000.png").status_code == 404


def test_gpt_image_1_makes_several_images_in_the_format_asked_with_usage(simulator):
    answer = v1(simulator).images.generate(
        model="gpt-image-1", prompt="Two cats", n=2, size="1536x1024", quality="low", output_format="webp"
    )
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in answer.data]
    assert [(i.format, i.size) for i in images] == [("WEBP", (1536, 1024))] * 2
    assert answer.usage.output_tokens == 2 * 400 and answer.usage.input_tokens > 0


def test_gpt_image_1_edits_an_uploaded_image(simulator):
    answer = azure(simulator).images.edit(
        model="gpt-image-1", image=("in.png", png(96, 64), "image/png"), prompt="Add a hat", output_format="jpeg"
    )
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json)))
    assert image.format == "JPEG" and image.size == (1536, 1024)  # "auto": the closest size to the input's
    assert answer.usage.input_tokens_details.image_tokens > 0
    with pytest.raises(BadRequestError) as refused:
        azure(simulator).images.edit(
            model="gpt-image-1", image=("in.png", b"not a picture", "image/png"), prompt="Add a hat"
        )
    assert refused.value.body["param"] == "image"


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"prompt": "x", "size": "512x512"}, None, "invalid_size"),
        ({"prompt": "x", "n": 2}, "n", "invalid_value"),
        ({"prompt": "x", "quality": "ultra"}, "quality", "invalid_value"),
        ({"prompt": "x" * 4001}, "prompt", "string_above_max_length"),
        ({"prompt": "x", "style": "odd"}, "style", "invalid_value"),
        ({"size": "1024x1024"}, "prompt", "missing_required_parameter"),
    ],
)
def test_dall_e_3_refuses_bad_requests(simulator, body, param, code):
    r = httpx.post(
        deployment_url(simulator, "dall-e-3", "images/generations"), json=body, headers={"api-key": simulator.key}
    )
    assert openai_error(r, 400, param)["code"] == code


def test_gpt_image_1_limits(simulator):
    url = deployment_url(simulator, "gpt-image-1", "images/generations")
    headers = {"api-key": simulator.key}
    assert (
        openai_error(httpx.post(url, json={"prompt": "x", "n": 11}, headers=headers), 400, "n")["code"]
        == "integer_out_of_range"
    )
    assert openai_error(httpx.post(url, json={"prompt": "x", "size": "1792x1024"}, headers=headers), 400, "size")
    assert openai_error(
        httpx.post(url, json={"prompt": "x", "response_format": "url"}, headers=headers), 400, "response_format"
    )


def test_a_chat_deployment_cannot_transcribe(simulator, wav):
    r = upload(simulator, "audio/transcriptions", {"file": ("a.wav", wav)}, deployment="gpt-4o")
    assert r.status_code == 400 and r.json()["error"]["code"] == "OperationNotSupported"


# --- pace and quotas -----------------------------------------------------------------------

DEPLOYMENTS = {
    "whisper": {"model": "whisper", "audioPace": 0.5, "latency": {"requestMs": {"mean": 100}}},
    "tts": {"model": "tts"},
    "dall-e-3": {"model": "dall-e-3", "latency": {"requestMs": {"mean": 100}}},
    "gpt-image-1": {"model": "gpt-image-1", "latency": {"requestMs": {"mean": 100}}},
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limited")
    (folder / "deployments.json").write_text(json.dumps(DEPLOYMENTS))
    sim = start_simulator(folder, {"OPENAI_DEPLOYMENT_CONFIG_PATH": str(folder / "deployments.json")})
    yield sim
    sim.stop()


def test_a_transcription_takes_a_share_of_the_audios_length(limited):
    started = time.monotonic()
    azure(limited).audio.transcriptions.create(model="whisper", file=("a.wav", tone("wav", 4.0)))
    took = time.monotonic() - started
    assert 1.8 <= took <= 6, took  # 0.1 s plus half of 4 s


def test_each_operation_has_azures_requests_per_minute_quota(limited, wav):
    client = azure(limited)
    calls = {
        "Translations_Create": lambda: client.audio.translations.create(model="whisper", file=("a.wav", wav)),
        # whisper's window is still full: transcriptions share the deployment's quota
        "Transcriptions_Create": lambda: client.audio.transcriptions.create(model="whisper", file=("a.wav", wav)),
        "Speech_Create": lambda: client.audio.speech.create(model="tts", voice="alloy", input="hi").read(),
        "ImageGenerations_Create": lambda: client.images.generate(model="dall-e-3", prompt="a boat"),
        "ImageEdits_Create": lambda: client.images.edit(model="gpt-image-1", image=("in.png", png()), prompt="x"),
    }
    for operation, call in calls.items():
        try:  # Azure's defaults (3 or 6 a minute) allow one request per short window
            call()
        except RateLimitError:
            # whisper's one request went to the pacing test (or to the translation)
            assert operation in ("Translations_Create", "Transcriptions_Create")
        with pytest.raises(RateLimitError) as throttled:
            call()
        error = throttled.value.body
        message = error["message"] if "message" in error else error["error"]["message"]
        assert f"Requests to the {operation} Operation" in message and "call rate limit" in message
        assert int(throttled.value.response.headers["retry-after"]) >= 1


def test_metrics_count_each_operation(limited):
    samples = scrape(limited)
    for operation in ("transcriptions", "translations", "speech", "images", "image_edits"):
        assert value(samples, "aoai_requests_total", operation=operation) >= 1, operation
    assert value(samples, "aoai_requests_total", operation="speech", status="429") >= 1


def test_a_streamed_transcription_is_paced_over_the_work(limited):
    started = time.monotonic()
    seen = [
        time.monotonic() - started
        for _ in azure(limited).audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", tone("wav", 10.0)), stream=True
        )
    ]
    assert len(seen) > 10
    assert seen[-1] - seen[0] >= 0.3, seen  # 0.3 s of request time plus 0.08 s per second of audio


EXTENSION = """
from aoai.extension import json_response, openai_transcriptions


def heard(context):
    if context.values["operation"] != "transcriptions":
        return openai_transcriptions(context)
    seconds = context.values["audio_seconds"]
    return json_response(200, {"text": f"{seconds:.1f} seconds heard"}, context.request)


def initialize(config):
    config.replace_generator("openai_transcriptions", heard)
"""


def test_an_extension_replaces_the_transcription_generator(simulator_factory, tmp_path, wav):
    (tmp_path / "heard.py").write_text(EXTENSION)
    sim = simulator_factory({"EXTENSION_PATH": str(tmp_path / "heard.py"), "SIMULATOR_LATENCY": "false"})
    client = azure(sim)
    assert client.audio.transcriptions.create(model="whisper", file=("a.wav", wav)).text == "3.0 seconds heard"
    assert client.audio.translations.create(model="whisper", file=("a.wav", wav)).text.endswith(".")
