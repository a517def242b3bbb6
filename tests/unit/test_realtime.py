"""The realtime protocol engine driven event by event, without sockets."""

import asyncio
import base64
import json
import random

import jsonschema
import numpy as np
import pytest

from aoai.realtime import audio
from aoai.realtime.session import Session, SessionPlan
from aoai.realtime.timing import NO_WAITING, Timing


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.now += seconds
        await asyncio.sleep(0)


class Harness:
    def __init__(self, flavour="beta", timing=NO_WAITING, **plan):
        self.events = []
        self.clock = FakeClock()
        self.times = []
        self.session = Session(
            SessionPlan("rt", "gpt-4o-realtime-preview", flavour, timing, seed=1, **plan),
            self.collect,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    async def collect(self, event):
        json.dumps(event)  # every event is plain JSON
        self.events.append(event)
        self.times.append(self.clock.now)

    async def send(self, event):
        await self.session.receive(event if isinstance(event, (str, bytes)) else json.dumps(event))

    async def settle(self):
        running = self.session.response
        if running and running.task:
            await running.task

    def types(self):
        return [e["type"] for e in self.events]

    def of(self, kind):
        return [e for e in self.events if e["type"] == kind]

    def clear(self):
        self.events.clear()
        self.times.clear()


def run(coroutine):
    return asyncio.run(coroutine)


def collapse(types):
    """Runs of one delta type shown once."""
    out = []
    for t in types:
        if not (out and out[-1] == t and t.endswith(".delta")):
            out.append(t)
    return out


def pcm(seconds, amplitude, pitch=220.0):
    n = np.arange(int(seconds * audio.RATE))
    return (np.sin(2 * np.pi * pitch * n / audio.RATE) * amplitude).astype(np.int16)


# --- Text turns -------------------------------------------------------------------------------


def test_a_text_turn_in_beta_has_the_preview_event_order():
    async def main():
        h = Harness("beta")
        await h.session.start()
        assert h.types() == ["session.created", "conversation.created"]
        h.clear()
        await h.send({"type": "session.update", "session": {"modalities": ["text"]}})
        await h.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            }
        )
        await h.send({"type": "response.create", "event_id": "c1"})
        await h.settle()
        return h

    h = run(main())
    assert collapse(h.types()) == [
        "session.updated",
        "conversation.item.created",
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.created",
        "response.content_part.added",
        "response.text.delta",
        "response.text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    done = h.of("response.done")[0]["response"]
    text = h.of("response.text.done")[0]["text"]
    assert "".join(e["delta"] for e in h.of("response.text.delta")) == text
    assert done["status"] == "completed" and done["output"][0]["content"][0] == {"type": "text", "text": text}
    usage = done["usage"]
    assert usage["output_token_details"]["text_tokens"] == usage["output_tokens"] > 0
    assert usage["input_token_details"]["text_tokens"] > 0
    assert all(e["event_id"].startswith("event_") for e in h.events)


def test_a_text_turn_in_ga_has_the_ga_event_order_and_the_same_seed_the_same_words():
    async def main():
        h = Harness("ga")
        await h.session.start()
        await h.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
        await h.send({"type": "response.create"})
        await h.settle()
        return h

    h = run(main())
    assert collapse(h.types()) == [
        "session.created",
        "session.updated",
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    assert h.of("response.content_part.done")[0]["part"]["type"] == "output_text"
    again = run(main())
    assert h.of("response.output_text.done")[0]["text"] == again.of("response.output_text.done")[0]["text"]
    session = h.of("session.updated")[0]["session"]
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_an_audio_answer_is_paced_and_as_long_as_its_words():
    timing = Timing(first_audio=0.5, pace=1.0)

    async def main():
        h = Harness("beta", timing)
        start = h.clock.now
        await h.send({"type": "response.create"})
        await h.settle()
        return h, start

    h, start = run(main())
    deltas = [(t, e) for t, e in zip(h.times, h.events, strict=True) if e["type"] == "response.audio.delta"]
    assert deltas[0][0] == pytest.approx(start + 0.5)
    seconds = sum(len(base64.b64decode(e["delta"])) for _, e in deltas) / (2 * audio.RATE)
    transcript = h.of("response.audio_transcript.done")[0]["transcript"]
    assert seconds == pytest.approx(max(0.5, len(transcript.split()) / 2.5), abs=0.01)
    # 100 ms of audio every 100 ms of wall time after the first
    assert deltas[-1][0] - deltas[0][0] == pytest.approx(0.1 * (len(deltas) - 1), abs=1e-6)
    assert "".join(e["delta"] for e in h.of("response.audio_transcript.delta")) == transcript
    usage = h.of("response.done")[0]["response"]["usage"]
    assert usage["output_token_details"]["audio_tokens"] == int(seconds * 20)
    assert h.session.usage.first_audio_seconds[0] == pytest.approx(0.5)


# --- Audio in, server VAD ---------------------------------------------------------------------


def test_server_vad_finds_speech_commits_transcribes_and_answers():
    speech = np.concatenate([pcm(0.5, 0), pcm(1.0, 8000), pcm(1.0, 0)])

    async def main():
        h = Harness("ga")
        await h.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "output_modalities": ["audio"],
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {
                                "type": "server_vad",
                                "silence_duration_ms": 500,
                                "prefix_padding_ms": 300,
                            },
                        }
                    },
                },
            }
        )
        data = speech.astype("<i2").tobytes()
        for start in range(0, len(data), 4800):  # 100 ms appends
            await h.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(data[start : start + 4800]).decode()}
            )
        await h.settle()
        return h

    h = run(main())
    started = h.of("input_audio_buffer.speech_started")[0]
    stopped = h.of("input_audio_buffer.speech_stopped")[0]
    assert started["audio_start_ms"] == 500 - 300
    assert stopped["audio_end_ms"] == 1500 + 500
    committed = h.of("input_audio_buffer.committed")[0]
    assert committed["item_id"] == started["item_id"] == stopped["item_id"]
    kinds = h.types()
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    transcript = h.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert len(transcript.split()) >= 3  # ~2 s of audio at 2.5 words a second
    assert h.of("response.output_audio.delta") and h.of("response.done")[0]["response"]["status"] == "completed"
    assert h.of("response.done")[0]["response"]["usage"]["input_token_details"]["audio_tokens"] == 20


def test_commit_of_an_empty_buffer_is_an_error_and_clear_acknowledges():
    async def main():
        h = Harness()
        await h.send({"type": "session.update", "session": {"turn_detection": None}})
        await h.send({"type": "input_audio_buffer.commit", "event_id": "c9"})
        await h.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(9600)).decode()})
        await h.send({"type": "input_audio_buffer.clear"})
        await h.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(9600)).decode()})
        await h.send({"type": "input_audio_buffer.commit"})
        return h

    h = run(main())
    error = h.of("error")[0]["error"]
    assert error["code"] == "input_audio_buffer_commit_empty" and error["event_id"] == "c9"
    assert h.types()[-3:] == ["input_audio_buffer.cleared", "input_audio_buffer.committed", "conversation.item.created"]


def test_the_input_buffer_is_bounded():
    async def main():
        h = Harness(max_audio_buffer_bytes=10_000)
        await h.send({"type": "session.update", "session": {"turn_detection": None}})
        chunk = base64.b64encode(bytes(6000)).decode()
        await h.send({"type": "input_audio_buffer.append", "audio": chunk})
        await h.send({"type": "input_audio_buffer.append", "audio": chunk, "event_id": "big"})
        return h

    h = run(main())
    assert h.of("error")[0]["error"]["code"] == "input_audio_buffer_full"
    assert len(h.session.buffer) == 6000


def test_conversation_items_are_bounded():
    async def main():
        h = Harness(max_items=3)
        for i in range(5):
            await h.send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"m{i}"}]},
                }
            )
        return h

    h = run(main())
    assert len(h.session.items) == 3


# --- Function calls ---------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"],
    },
}


@pytest.mark.parametrize("flavour", ["beta", "ga"])
def test_a_function_call_round_trip(flavour):
    async def main():
        h = Harness(flavour)
        session = {"tools": [WEATHER], "tool_choice": "auto"}
        session.update(
            {"type": "realtime", "output_modalities": ["text"]} if flavour == "ga" else {"modalities": ["text"]}
        )
        await h.send({"type": "session.update", "session": session})
        await h.send({"type": "response.create"})
        await h.settle()
        first = list(h.events)
        call = h.of("response.function_call_arguments.done")[0]
        h.clear()
        await h.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp": 21}'},
            }
        )
        await h.send({"type": "response.create"})
        await h.settle()
        return h, first, call

    h, first, call = run(main())
    kinds = collapse([e["type"] for e in first])
    assert kinds[kinds.index("response.output_item.added") :] == [
        "response.output_item.added",
        "conversation.item.created" if flavour == "beta" else "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        *(["conversation.item.done"] if flavour == "ga" else []),
        "response.output_item.done",
        "response.done",
    ]
    jsonschema.validate(json.loads(call["arguments"]), WEATHER["parameters"])
    done = next(e for e in first if e["type"] == "response.done")["response"]
    assert done["output"][0]["type"] == "function_call" and done["output"][0]["name"] == "get_weather"
    # After the output the model answers in words.
    assert h.of("response.done")[0]["response"]["output"][0]["type"] == "message"


# --- Cancel, out of band ----------------------------------------------------------------------


def test_cancel_mid_response_ends_it_as_cancelled():
    async def main():
        h = Harness("beta", Timing(first_audio=0.2, pace=1.0))
        await h.send({"type": "response.create"})
        while len(h.of("response.audio.delta")) < 3:
            await asyncio.sleep(0)
        await h.send({"type": "response.cancel"})
        await h.send({"type": "response.cancel", "event_id": "again"})
        return h

    h = run(main())
    done = h.of("response.done")
    assert len(done) == 1
    response = done[0]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert response["output"][0]["status"] == "incomplete"
    assert h.types()[-2:] == ["response.done", "error"]
    assert h.of("error")[0]["error"]["code"] == "response_cancel_not_active"
    assert h.session.response is None


def test_an_out_of_band_response_leaves_the_conversation_alone_and_takes_overrides():
    async def main():
        h = Harness("beta")
        await h.send(
            {
                "type": "response.create",
                "response": {"conversation": "none", "modalities": ["text"], "metadata": {"topic": "x"}},
            }
        )
        await h.settle()
        return h

    h = run(main())
    assert "conversation.item.created" not in h.types()
    assert h.of("response.text.done") and not h.of("response.audio.delta")
    response = h.of("response.done")[0]["response"]
    assert response["conversation_id"] is None and response["metadata"] == {"topic": "x"}
    assert not h.session.items


def test_a_second_response_while_one_runs_is_refused():
    async def main():
        h = Harness("beta", Timing(first_audio=5, pace=1))
        await h.send({"type": "response.create"})
        await h.send({"type": "response.create"})
        await h.session.close()
        return h

    h = run(main())
    assert h.of("error")[0]["error"]["code"] == "conversation_already_has_active_response"


# --- Items ------------------------------------------------------------------------------------


def test_retrieve_truncate_and_delete_items():
    async def main():
        h = Harness("beta")
        await h.send({"type": "response.create"})
        await h.settle()
        item_id = h.of("response.output_item.done")[0]["item"]["id"]
        h.clear()
        await h.send({"type": "conversation.item.retrieve", "item_id": item_id})
        await h.send(
            {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 200}
        )
        await h.send({"type": "conversation.item.delete", "item_id": item_id})
        await h.send({"type": "conversation.item.retrieve", "item_id": item_id})
        return h, item_id

    h, item_id = run(main())
    assert h.types() == [
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "error",
    ]
    assert h.of("conversation.item.retrieved")[0]["item"]["id"] == item_id
    assert h.of("error")[0]["error"]["code"] == "item_not_found"


# --- Invalid input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flavour", "session", "code", "param"),
    [
        ("ga", {"output_modalities": ["text"]}, "missing_required_parameter", "session.type"),
        ("ga", {"type": "chat"}, "invalid_value", "session.type"),
        ("beta", {"modalities": ["audio"]}, "invalid_value", "session.modalities"),
        ("beta", {"voice": "nobody"}, "invalid_value", "session.voice"),
        ("beta", {"input_audio_format": "mp3"}, "invalid_value", "session.input_audio_format"),
        (
            "ga",
            {"type": "realtime", "audio": {"input": {"format": {"type": "audio/mp3"}}}},
            "invalid_value",
            "session.audio.input.format.type",
        ),
        ("beta", {"temperature": 0.1}, "decimal_below_min_value", "session.temperature"),
        ("beta", {"max_response_output_tokens": 5000}, "integer_out_of_range", "session.max_response_output_tokens"),
        ("beta", {"turn_detection": {"type": "loud"}}, "invalid_value", "session.turn_detection.type"),
        ("beta", {"tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
        ("beta", {"colour": "blue"}, "unknown_parameter", "session.colour"),
    ],
)
def test_an_invalid_session_update_is_an_error_and_the_session_stays(flavour, session, code, param):
    async def main():
        h = Harness(flavour)
        before = h.session.config
        await h.send({"type": "session.update", "session": session, "event_id": "evt_1"})
        return h, before

    h, before = run(main())
    assert h.types() == ["error"]
    error = h.events[0]["error"]
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error",
        code,
        param,
        "evt_1",
    )
    assert error["message"]
    assert h.session.config == before


def test_valid_updates_echo_the_whole_configuration():
    async def main():
        h = Harness("beta")
        await h.send(
            {
                "type": "session.update",
                "session": {
                    "voice": "verse",
                    "instructions": "Be brief.",
                    "input_audio_format": "g711_ulaw",
                    "output_audio_format": "g711_alaw",
                    "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                    "input_audio_transcription": {"model": "gpt-4o-transcribe"},
                    "temperature": 0.7,
                    "max_response_output_tokens": 300,
                },
            }
        )
        return h

    session = run(main()).of("session.updated")[0]["session"]
    assert session["voice"] == "verse" and session["output_audio_format"] == "g711_alaw"
    assert session["turn_detection"]["type"] == "semantic_vad" and session["max_response_output_tokens"] == 300
    assert session["modalities"] == ["text", "audio"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        (b"\x00\x01binary", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"event_id": "e"}', "missing_required_parameter"),
        ('{"type": "session.dance"}', "invalid_value"),
        ('{"type": 5}', "invalid_value"),
        ('{"type": "input_audio_buffer.append", "audio": "@@@"}', "invalid_value"),
        ('{"type": "conversation.item.create", "item": {"type": "poem"}}', "invalid_value"),
        ('{"type": "response.create", "response": {"conversation": "other"}}', "invalid_value"),
    ],
)
def test_garbage_frames_get_an_error_event_never_an_exception(frame, code):
    async def main():
        h = Harness()
        await h.send(frame)
        await h.send({"type": "session.update", "session": {}})
        return h

    h = run(main())
    assert h.types() == ["error", "session.updated"]
    assert h.events[0]["error"]["type"] == "invalid_request_error" and h.events[0]["error"]["code"] == code


# --- Audio ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [audio.ULAW, audio.ALAW])
def test_g711_round_trip_stays_within_half_a_step_and_matches_ffmpeg_decoding(fmt):
    import av

    samples = np.arange(-32768, 32768, 7, dtype=np.int64).astype(np.int16)
    coded = audio.encode(samples, fmt)
    assert len(coded) == len(samples)
    back = audio.decode(coded, fmt).astype(np.int64)
    step = np.maximum(16, np.abs(samples.astype(np.int64)) // 16)  # G.711 steps grow with the level
    assert np.all(np.abs(back - samples) <= step)
    assert audio.encode(audio.decode(coded, fmt), fmt) == coded  # levels are fixed points

    codec = av.CodecContext.create("pcm_mulaw" if fmt == audio.ULAW else "pcm_alaw", "r")
    codec.sample_rate, codec.layout = 8000, "mono"
    decoded = np.concatenate([f.to_ndarray().ravel() for f in codec.decode(av.Packet(bytes(range(256))))])
    assert np.array_equal(decoded, audio.decode(bytes(range(256)), fmt))


def test_answers_in_g711_are_one_byte_a_sample_at_8khz():
    async def main():
        h = Harness("beta")
        await h.send({"type": "session.update", "session": {"output_audio_format": "g711_ulaw"}})
        await h.send({"type": "response.create"})
        await h.settle()
        return h

    h = run(main())
    first = base64.b64decode(h.of("response.audio.delta")[0]["delta"])
    assert len(first) == 800
    assert audio.rms(audio.decode(first, audio.ULAW)) > 0.05


def test_the_vad_level_follows_the_threshold():
    assert audio.level_of(0) < audio.level_of(0.5) < audio.level_of(1)
    detector = audio.Detector(0.5, 0, 100)
    assert detector.feed(pcm(0.2, 30)) == []  # -61 dBFS: not speech
    found = detector.feed(pcm(0.2, 3000))
    assert [f.kind for f in found] == ["started"] and found[0].ms == 200


def test_a_turn_detected_while_answering_interrupts_the_answer():
    async def main():
        h = Harness("beta", Timing(first_audio=0.1, pace=1.0))
        await h.send({"type": "response.create"})
        while not h.of("response.audio.delta"):
            await asyncio.sleep(0)
        loud = pcm(0.3, 8000).astype("<i2").tobytes()
        await h.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(loud).decode()})
        await h.session.close()
        return h

    h = run(main())
    response = h.of("response.done")[0]["response"]
    assert response["status_details"]["reason"] == "turn_detected"
    assert h.types().index("response.done") < h.types().index("input_audio_buffer.speech_started")


def test_random_generator_is_used_when_given():
    session = Session(SessionPlan("d", "m", "beta", NO_WAITING), lambda e: asyncio.sleep(0), rng=random.Random(3))
    assert session.rng.random() == random.Random(3).random()
