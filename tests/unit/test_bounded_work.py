"""Work a client sizes stays bounded: hostile inputs built here (a FLAC header claiming 190 hours,
a PNG bomb, a truncated JPEG, `(a+)+$`, a million spaces, a schema asking for 100 million
characters) get Azure's 4xx or a bounded answer, quickly; large work leaves the event loop."""

from __future__ import annotations

import asyncio
import io
import random
import struct
import time
import tracemalloc
import zlib

import av
import lorem
import numpy as np
import orjson
import pytest
from media import decoded_seconds, png, tone
from mitmproxy.test import taddons
from unit_support import chat_path, json_of, make_config, make_flow, make_services

from aoai import generators
from aoai.generators import answer_tokens
from aoai.openai import audio, catalogue, chat, content_filter, images, schema_values, text, tokens
from aoai.openai.catalogue import Normal
from aoai.openai.forms import Form, Upload
from aoai.openai.validation import Invalid
from aoai.runtime import offload
from aoai.runtime.bounds import Bounds
from aoai.runtime.config import ConfigError
from aoai.runtime.state import context_of
from aoai.stages.checks import Checks
from aoai.stages.contentfilter import ContentFilter
from aoai.stages.generate import Generate
from aoai.stages.management import patch_plan
from aoai.stages.routing import Routing

SETTINGS = chat.ChatSettings(Normal(200, 50), 0.5)


@pytest.fixture(params=tokens.ENCODINGS)
def enc(request):
    return tokens.encoding(request.param)


def cpu_seconds(work) -> tuple[object, float]:
    started = time.process_time()
    result = work()
    return result, time.process_time() - started


# --- tokens -----------------------------------------------------------------------------------------


def mixed_text(seed: int, parts: int = 6000) -> str:
    """Prose with newlines, runs of spaces, numbers, contractions, other scripts and emoji."""
    rng = random.Random(seed)
    state = random.getstate()
    random.seed(seed)
    try:
        out = []
        for _ in range(parts):
            r = rng.random()
            if r < 0.55:
                out.append(lorem.sentence())
            elif r < 0.65:
                out.append("\n" * rng.randint(1, 3))
            elif r < 0.72:
                out.append(" " * rng.randint(1, 40))
            elif r < 0.8:
                out.append(str(rng.randint(0, 10**9)))
            else:
                out.append(rng.choice(["don't it's ", "Ünïcödé ½ 日本語 😀 ", ".\n/x", "\t\t", "'s", "\r\n", "  \n  "]))
        return "".join(out)
    finally:
        random.setstate(state)


@pytest.mark.parametrize("seed", [1, 2])
def test_long_text_counts_exactly_as_tiktoken_does(enc, seed):
    content = mixed_text(seed)
    assert len(content) > tokens.LONG_TEXT  # counted in slices
    exact = enc.encode(content, disallowed_special=())
    assert tokens.encode(content, enc) == exact
    assert tokens.count(content, enc) == len(exact)


def test_slices_are_cut_where_tiktoken_cuts(enc):
    content = mixed_text(3, 1500)
    for size in (500, 4096):
        pieces = list(tokens.slices(content, size))
        assert "".join(pieces) == content and max(len(p) for p in pieces) <= size
        assert sum(len(enc.encode(p, disallowed_special=())) for p in pieces) == len(
            enc.encode(content, disallowed_special=())
        )


@pytest.mark.parametrize("char, per_token, fails", [(" ", 128, True), ("\t", 16, True), ("\n", 16, False)])
def test_a_million_whitespace_characters_are_counted_not_failed(char, per_token, fails):
    enc = tokens.encoding("o200k_base")
    if fails:
        with pytest.raises(ValueError):  # what tiktoken alone does: its split's regex gives up
            enc.encode(char * 1_000_000 + "x", disallowed_special=())
    counted, spent = cpu_seconds(lambda: tokens.count(char * 1_000_000 + "x", enc))
    # tiktoken counts half a million the same way: the million counts twice that.
    half = len(enc.encode(char * 500_000, disallowed_special=()))
    assert abs(counted - 2 * half) <= 2 and counted >= 1_000_000 // per_token // 2
    assert spent < 5
    assert len(tokens.encode("Hi" + char * 1_000_000 + "there", enc)) == tokens.count(
        "Hi" + char * 1_000_000 + "there", enc
    )


def test_megabytes_of_one_letter_are_counted_in_slices():
    enc = tokens.encoding("o200k_base")
    counted, spent = cpu_seconds(lambda: tokens.count("a" * 3_000_000, enc))
    assert counted == pytest.approx(3_000_000 / 8, rel=0.01)  # tiktoken: "aaaaaaaa" is one token
    assert spent < 5  # 9.9 MB took 6.9 s on the event loop; now in slices, off the loop (below)


def test_a_short_prompt_is_encoded_in_one_call(enc, monkeypatch):
    monkeypatch.setattr(tokens, "slices", lambda *a: pytest.fail("a short text was sliced"))
    assert tokens.count("Hello there!", enc) == len(enc.encode("Hello there!"))


# --- schema values and tool arguments -----------------------------------------------------------------

# 1,000 rows of 10 strings of at least 10,000 characters: 100 million characters asked for.
HOSTILE_SCHEMA = {
    "type": "object",
    "required": ["rows"],
    "properties": {
        "rows": {
            "type": "array",
            "minItems": 1000,
            "maxItems": 1000,
            "items": {"type": "array", "minItems": 10, "maxItems": 10, "items": {"type": "string", "minLength": 10000}},
        }
    },
}


def structured(schema: dict, **body) -> dict:
    return {
        "messages": [{"role": "user", "content": "rows"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "rows", "schema": schema}},
        **body,
    }


def test_a_schema_asking_for_too_much_is_cut_at_the_token_budget_before_it_is_built():
    text.corpus("o200k_base")  # loaded once per process, not part of the answer's cost
    answer, spent = cpu_seconds(
        lambda: chat.generate(
            structured(HOSTILE_SCHEMA, max_tokens=16), catalogue.MODELS["gpt-4o"], 10, random.Random(1), SETTINGS
        )
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "length" and choice.tokens == 16 == len(choice.token_ids)
    assert choice.content.startswith('{"rows":[["')
    assert spent < 0.5  # was 21.9 s


def test_without_a_limit_the_models_output_limit_ends_the_answer():
    model = catalogue.MODELS["gpt-4o"]
    answer, spent = cpu_seconds(
        lambda: chat.generate(structured(HOSTILE_SCHEMA), model, 10, random.Random(1), SETTINGS)
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "length" and choice.tokens == model.max_output_tokens
    assert spent < 1


def test_tool_arguments_are_cut_at_the_budget_too():
    body = {
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 20,
        "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "fill", "parameters": HOSTILE_SCHEMA}}],
    }
    answer, spent = cpu_seconds(lambda: chat.generate(body, catalogue.MODELS["gpt-4o"], 10, random.Random(1), SETTINGS))
    choice = answer.choices[0]
    assert choice.finish_reason == "length" and choice.tokens == 20
    assert choice.tool_calls[0]["function"]["arguments"].startswith('{"rows":[["')
    assert spent < 0.5


def test_many_choices_of_long_json_share_the_bound_on_a_requests_json_answers():
    settings = chat.ChatSettings(Normal(200, 50), 0.5, json_answer_tokens=4096)
    answer, spent = cpu_seconds(
        lambda: chat.generate(
            structured(HOSTILE_SCHEMA, n=128), catalogue.MODELS["gpt-4o"], 10, random.Random(1), settings
        )
    )
    assert len(answer.choices) == 128 and answer.completion_tokens == 128 * 32  # 4096 // 128 each
    assert all(c.finish_reason == "length" for c in answer.choices)
    assert spent < 2
    # The default bound leaves one answer as long as the largest model writes.
    assert chat.ChatSettings(Normal(1), 0).json_answer_tokens >= catalogue.MODELS["gpt-5"].max_output_tokens
    assert Bounds().json_answer_tokens == chat.ChatSettings(Normal(1), 0).json_answer_tokens


@pytest.mark.parametrize("costly", ["allOf", "$ref"])
def test_a_schema_whose_nodes_are_costly_to_resolve_costs_them_once(costly):
    if costly == "allOf":  # 20,000 parts to merge (into one small object)
        items = {"allOf": [{"properties": {"p": {"type": "integer"}}, "required": ["p"]}] * 20_000}
        defs = {}
    else:  # a path 20,000 steps long
        defs = {"type": "integer"}
        for _ in range(20_000):
            defs = {"a": defs}
        items = {"$ref": "#/$defs/" + "/".join(["a"] * 20_000)}
    schema = {"type": "array", "minItems": 1000, "maxItems": 1000, "items": items, "$defs": defs}
    corpus = text.corpus("o200k_base")
    (value, _), spent = cpu_seconds(
        lambda: schema_values.value_within(schema, random.Random(1), corpus.words, 1_000_000)
    )
    assert len(value) == 1000 and spent < 1  # each of the 1,000 items resolved it anew: seconds


def test_a_value_is_built_only_as_far_as_its_room():
    corpus = text.corpus("o200k_base")
    value, whole = schema_values.value_within(HOSTILE_SCHEMA, random.Random(1), corpus.words, 5_000)
    assert not whole and len(orjson.dumps(value)) < 5_000 + 100
    small = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    value, whole = schema_values.value_within(small, random.Random(1), corpus.words, 5_000)
    assert whole and value == schema_values.value_for(small, random.Random(1), corpus.words)


def test_json_answers_without_a_limit_count_as_the_models_limit_when_choosing_a_thread():
    config = make_config()
    flow = make_flow("POST", chat_path(), structured(HOSTILE_SCHEMA, n=2))
    context = context_of(flow)
    context.body, context.deployment = structured(HOSTILE_SCHEMA, n=2), config.deployments["gpt-4o"]
    context.config = config
    assert answer_tokens(context) == 2 * catalogue.MODELS["gpt-4o"].max_output_tokens


# --- embeddings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_embeddings_are_written_a_vector_at_a_time_as_the_same_json(fmt):
    from aoai.openai import embeddings

    args = (["Hello", [1, 2, 3], "Bye"], "text-embedding-3-small", "v", 16, fmt, 7)
    assert embeddings.response_json(*args) == orjson.dumps(embeddings.response_body(*args))


# --- audio uploads ---------------------------------------------------------------------------------


def flac_claiming(seconds: float) -> bytes:
    """A real 1-second FLAC whose STREAMINFO claims `seconds` of audio."""
    data = bytearray(tone("flac", 1.0))
    assert data[:4] == b"fLaC"
    # STREAMINFO's bytes 10..17: sample rate (20 bits), channels, bits, then 36 bits of total samples.
    packed = int.from_bytes(data[18:26], "big")
    rate = packed >> 44
    packed = (packed & ~((1 << 36) - 1)) | min(int(seconds * rate), (1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def form_with(data: bytes, filename: str) -> Form:
    return Form({}, {"file": [Upload("file", filename, "application/octet-stream", data)]})


def test_a_flac_header_claiming_190_hours_is_not_believed():
    lying = flac_claiming(190 * 3600)
    assert len(lying) < 40_000
    assert audio.duration_of(flac_claiming(1.0)) == pytest.approx(1.0, abs=0.05)  # the same file, honest
    assert audio.duration_of(lying) is None
    with pytest.raises(Invalid) as caught:
        audio.check_audio_request(form_with(lying, "a.flac"), catalogue.MODELS["whisper"], audio.TRANSCRIBE, 10800)
    assert caught.value.status == 400 and "could not be decoded" in caught.value.message


def test_a_wav_header_claiming_more_than_its_bytes_lasts_what_its_bytes_hold():
    data = bytearray(tone("wav", 2.0))
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFF0)  # a WAV written as a stream says this
    assert audio.duration_of(bytes(data)) == pytest.approx(2.0, abs=0.05)


def test_audio_longer_than_the_bound_is_refused():
    form = form_with(tone("mp3", 3.0), "a.mp3")
    with pytest.raises(Invalid) as caught:
        audio.check_audio_request(form, catalogue.MODELS["whisper"], audio.TRANSCRIBE, 2)
    assert caught.value.status == 400 and "too long" in caught.value.message
    assert audio.check_audio_request(form, catalogue.MODELS["whisper"], audio.TRANSCRIBE, 5).duration == pytest.approx(
        3.0, abs=0.1
    )


def test_a_stream_without_a_stated_length_is_measured_by_its_packets():
    out = io.BytesIO()
    with av.open(out, mode="w", format="webm", options={"live": "1"}) as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 48000 * 2), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 48000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    assert audio.duration_of(out.getvalue()) == pytest.approx(2.0, abs=0.05)
    assert audio.duration_of(out.getvalue(), longest=0.5) < 1.0  # stops counting soon past the bound


# --- speech -------------------------------------------------------------------------------------------

LONGEST_SPEECH = audio.SpeechRequest(" ".join(["a"] * 2048), "alloy", "wav", 0.25)  # 4,096 characters


def traced_peak(work) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_longest_speech_holds_little_beyond_its_answer():
    assert len(LONGEST_SPEECH.input) <= audio.MAX_SPEECH_INPUT and LONGEST_SPEECH.duration > 3000
    (data, content_type), peak = traced_peak(lambda: audio.synthesize(LONGEST_SPEECH))
    assert content_type == "audio/wav" and len(data) == 44 + int(LONGEST_SPEECH.duration * 24000) * 2
    assert peak < len(data) + 8 * 2**20  # was +1.8 GiB: every sample as float64, then a copy per step
    assert decoded_seconds(data[: 44 + 48000 * 10]) == pytest.approx(10.0, abs=0.01)  # a valid WAV


def test_long_wav_speech_is_a_stream_of_one_shared_second():
    config = make_config()
    body = {"model": "tts", "input": " ".join(["a"] * 2048), "voice": "alloy", "response_format": "wav", "speed": 0.25}
    flow = make_flow("POST", "/openai/deployments/tts/audio/speech?api-version=2024-10-21", body)
    routing, checking = Routing(config, make_services(config)), Checks()
    with taddons.context(routing, checking):
        routing.request(flow)
        checking.request(flow)
    plan = generators.openai_speech(context_of(flow))
    assert plan.keep_body is False and plan.headers["content-type"] == "audio/wav"

    async def read():
        pieces = [piece async for piece in plan.source]
        return pieces[0][:44], sum(len(p) for p in pieces), len({id(p) for p in pieces[1:-1]})

    head, size, distinct = asyncio.run(read())
    assert head[:4] == b"RIFF" and size == 44 + int(LONGEST_SPEECH.duration * 24000) * 2
    assert distinct == 1  # 3,275 seconds of audio, one buffer


def test_encoded_speech_is_made_a_second_at_a_time():
    request = audio.SpeechRequest(" ".join(["word"] * 150), "nova", "flac", 1.0)  # 60 s
    (data, content_type), peak = traced_peak(lambda: audio.synthesize(request))
    assert content_type == "audio/flac" and decoded_seconds(data) == pytest.approx(60.0, abs=0.1)
    assert peak < len(data) * 2 + 4 * 2**20  # no array of the whole length (60 s of float64: 11 MiB)


# --- image edits ------------------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few rows of data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width // 8 + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# A JPEG's first 22 bytes: start of image, then a frame header claiming 65535x65535 pixels.
TRUNCATED_JPEG = bytes.fromhex("ffd8ffc0001108ffffffff03012200021101031101") + b"\x00"


def edit_form(data: bytes) -> Form:
    return Form({"prompt": ["make it blue"]}, {"image": [Upload("image", "a.png", "image/png", data)]})


@pytest.mark.parametrize(
    "data",
    [png_claiming(100_000, 100_000), png_claiming(20_000, 20_000), TRUNCATED_JPEG, b"\x89PNG\r\n\x1a\n" + b"\x00" * 20],
    ids=["png-bomb-10G", "png-bomb-400M", "jpeg-22-bytes", "png-truncated"],
)
def test_bombs_and_truncated_headers_are_azures_400(data):
    with pytest.raises(Invalid) as caught:
        images.check_edit(edit_form(data), catalogue.MODELS["gpt-image-1"])
    assert caught.value.status == 400 and caught.value.code == "invalid_image_format"


def test_more_pixels_than_the_bound_are_refused_from_the_header():
    data = png_claiming(8000, 8000)  # 64M pixels: Pillow would open it
    assert images.image_size(data) == (8000, 8000)
    with pytest.raises(Invalid) as caught:
        images.check_edit(edit_form(data), catalogue.MODELS["gpt-image-1"], Bounds().image_max_pixels)
    assert "8000x8000 pixels" in caught.value.message and caught.value.code == "invalid_image_format"
    assert images.check_edit(edit_form(png(64, 64)), catalogue.MODELS["gpt-image-1"], 64 * 64).inputs


# --- content-filter regular expressions -----------------------------------------------------------


def test_a_backtracking_regex_costs_linear_time():
    rules = content_filter.parse_policy({"prompt": {"hate": [{"regex": "(a+)+$"}]}}, "f").prompt
    # A backtracking engine doubles its time with each "a" before the "!": 27 took seconds.
    verdict, spent = cpu_seconds(lambda: content_filter.judge(rules, "a" * 27 + "!", content_filter.PROMPT))
    assert not verdict.scored and spent < 0.1
    verdict, spent = cpu_seconds(lambda: content_filter.judge(rules, "a" * 1_000_000 + "!", content_filter.PROMPT))
    assert not verdict.scored and spent < 1
    assert content_filter.judge(rules, "b aaa", content_filter.PROMPT).cut_at == 2


def test_terms_keep_whole_words_in_any_script_and_spacing():
    rules = content_filter.parse_policy({"prompt": {"hate": ["aa a", "café noir"]}}, "f").prompt
    assert content_filter.judge(rules, "aa aa a", content_filter.PROMPT).cut_at == 3  # an overlapping start
    assert content_filter.judge(rules, "un CAFÉ\u00a0Noir", content_filter.PROMPT).cut_at == 3
    assert not content_filter.judge(rules, "cafés noirs", content_filter.PROMPT).scored
    assert not content_filter.judge(rules, "xaa a", content_filter.PROMPT).scored


def test_a_term_inside_a_million_words_costs_linear_time():
    rules = content_filter.parse_policy({"prompt": {"hate": ["a"]}}, "f").prompt
    prompt = "ba " * 1_000_000 + "a"
    verdict, spent = cpu_seconds(lambda: content_filter.judge(rules, prompt, content_filter.PROMPT))
    assert verdict.cut_at == len(prompt) - 1 and spent < 1


def test_a_pattern_re2_cannot_run_is_a_400_naming_the_field_in_the_patch():
    with pytest.raises(ConfigError) as caught:
        patch_plan(make_config(), {"contentFilter": {"gpt-4o": {"prompt": {"violence": [{"regex": r"(\w+) \1"}]}}}})
    assert str(caught.value).startswith(
        "contentFilter.gpt-4o.prompt.violence[0].regex: not a valid regular expression ("
    )


# --- the stages hand large work to a thread -----------------------------------------------------


def test_offload_judges_a_body_by_its_size():
    assert not offload.heavy(make_flow("POST", chat_path(), {"messages": []}).request)
    assert offload.heavy(make_flow("POST", chat_path(), raw=b"x" * (offload.OFF_LOOP_BYTES + 1)).request)
    compressed = make_flow("POST", chat_path(), headers={"content-encoding": "gzip"}).request
    compressed.raw_content = b"x" * 2000  # may decode to a thousand times that
    assert offload.heavy(compressed)


def ticking_while(coro) -> tuple[object, float]:
    """Run `coro` with a ticker on the same loop; the longest gap between ticks."""

    async def main():
        gaps, last, done = [], time.perf_counter(), False

        async def tick():
            nonlocal last
            while not done:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        try:
            result = await coro
        finally:
            done = True
            await ticker
        return result, max(gaps, default=0.0)

    return asyncio.run(main())


def test_a_large_prompt_is_checked_off_the_loop():
    body = {"messages": [{"role": "user", "content": "a " * 2_000_000 + "\t" * 1_000_000}]}  # 5 MB
    flow = make_flow("POST", chat_path(), body)
    routing, checking = Routing(make_config()), Checks()
    with taddons.context(routing, checking):
        routing.request(flow)
        pending = checking.request(flow)
        assert pending is not None  # a coroutine: the work runs in a thread
        _, gap = ticking_while(pending)
    error = json_of(flow.response)["error"]
    assert flow.response.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "However, you requested 20" in error["message"]  # over two million tokens, counted
    assert gap < 0.25  # the loop kept running while the thread counted (generous: CI shares its cores)


def test_a_large_prompt_is_judged_off_the_loop():
    config = make_config()
    config.deployments["gpt-4o"].content_filter = content_filter.parse_policy(
        {"prompt": {"hate": [{"regex": "(a+)+$"}, "nasty"]}}, "f"
    )
    flow = make_flow("POST", chat_path(), {"messages": [{"role": "user", "content": "a " * 100_000 + "nasty"}]})
    routing, checking, judging = Routing(config), Checks(), ContentFilter(config)
    with taddons.context(routing, checking, judging):
        routing.request(flow)
        ticking_while(checking.request(flow))
        assert flow.response is None and context_of(flow).prompt_tokens > 100_000
        pending = judging.request(flow)
        assert pending is not None
        ticking_while(pending)
    assert flow.response.status_code == 400 and json_of(flow.response)["error"]["code"] == "content_filter"


def test_a_small_prompt_is_checked_where_it_is():
    flow = make_flow("POST", chat_path(), {"messages": [{"role": "user", "content": "Hello!"}]})
    routing, checking = Routing(make_config()), Checks()
    with taddons.context(routing, checking):
        routing.request(flow)
        assert checking.request(flow) is None and context_of(flow).prompt_tokens > 0


def test_long_speech_is_made_off_the_loop():
    config = make_config()
    body = {"model": "tts", "input": " ".join(["a"] * 2048), "voice": "alloy", "response_format": "flac", "speed": 0.25}
    flow = make_flow("POST", "/openai/deployments/tts/audio/speech?api-version=2024-10-21", body)
    routing, checking = Routing(config), Checks()
    generate = Generate(config, make_services(config))
    with taddons.context(routing, checking, generate):
        routing.request(flow)
        checking.request(flow)
        pending = generate.request(flow)
        assert pending is not None
        _, gap = ticking_while(pending)
    assert flow.response.status_code == 200 and flow.response.headers["content-type"] == "audio/flac"
    assert gap < 0.25
