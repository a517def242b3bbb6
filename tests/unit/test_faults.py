"""Declared faults as plain logic: parsing and its messages, the seeded draws, quota cuts on a
fake clock, and how stream plans and waits are reshaped."""

from __future__ import annotations

import json
import random

import pytest

from aoai.openai import catalogue
from aoai.runtime import config as cfg
from aoai.runtime import faults
from aoai.runtime.config import ConfigError, Deployment
from aoai.runtime.fault_book import FaultBook
from aoai.runtime.faults import FaultError, parse_fault, parse_profile
from aoai.runtime.streams import StreamPlan


def profile(*specs):
    return parse_profile(list(specs), "faults")


def test_every_kind_parses_with_its_parameters():
    p = profile(
        {"kind": "500", "share": 0.1},
        {"kind": "503", "share": 0.2, "retryAfter": 3},
        {"kind": "timeout", "share": 0.1, "status": 504, "afterMs": 1500},
        {"kind": "hang", "share": 0.01},
        {"kind": "streamCut", "share": 0.5, "afterTokens": 20},
        {"kind": "streamCut", "share": 0.5, "afterMs": 800},
        {"kind": "slowFirstByte", "share": 1, "ms": 2000},
        {"kind": "trickle", "share": 1, "factor": 5},
        {"kind": "quotaCut", "share": 0.01, "tokensPerMinute": 1000, "forS": 30},
        {"kind": "quotaCut", "everyS": 600, "tokensPerMinute": 500, "forS": 60},
        {"kind": "contextLength", "share": 0.05},
    )
    f = p.faults
    assert (f[0].retry_after_s, f[1].retry_after_s) == (None, 3)
    assert (f[2].status, f[2].after_s) == (504, 1.5)
    assert f[3].max_s == faults.HANG_MAX_S
    assert (f[4].after_tokens, f[5].after_s) == (20, 0.8)
    assert (f[6].delay_s, f[7].factor) == (2.0, 5.0)
    assert (f[8].tokens_per_minute, f[8].for_s, f[8].every_s) == (1000, 30.0, None)
    assert (f[9].every_s, f[9].share) == (600.0, 0.0)
    assert parse_fault({"kind": "503", "share": 1}, "x").retry_after_s == 1  # Azure's 503s say when to retry
    assert parse_fault({"kind": "timeout", "share": 1, "afterMs": 10}, "x").status == 408
    assert p.to_json()[1] == {"kind": "503", "share": 0.2, "retryAfter": 3}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("503", 'f[0]: expected an object such as {"kind": "503", "share": 0.1}'),
        ({"kind": "404", "share": 1}, "f[0].kind: expected one of 500, 503, timeout, hang"),
        ({"kind": "503"}, "f[0].share: required, a number from 0 to 1"),
        ({"kind": "503", "share": 1.5}, "f[0].share: expected a number from 0 to 1, got 1.5"),
        ({"kind": "503", "share": True}, "f[0].share: expected a number from 0 to 1, got true"),
        ({"kind": "503", "share": 1, "retryAfter": 1.5}, "f[0].retryAfter: expected a whole number from 0 to 3600"),
        (
            {"kind": "503", "share": 1, "afterMs": 5},
            "f[0].afterMs: unknown field for kind 503 (it takes share and retryAfter)",
        ),
        ({"kind": "timeout", "share": 1, "afterMs": 5, "status": 500}, "f[0].status: expected 408 or 504, got 500"),
        ({"kind": "timeout", "share": 1}, "f[0].afterMs: required"),
        ({"kind": "hang", "share": 1, "maxS": 0}, "f[0].maxS: expected a number above 0, got 0"),
        ({"kind": "streamCut", "share": 1}, "f[0]: a streamCut takes afterTokens or afterMs (one of them)"),
        ({"kind": "streamCut", "share": 1, "afterTokens": 2, "afterMs": 5}, "f[0]: a streamCut takes afterTokens or"),
        (
            {"kind": "streamCut", "share": 1, "afterTokens": -1},
            "f[0].afterTokens: expected a whole number of at least 0",
        ),
        ({"kind": "trickle", "share": 1, "factor": 0.5}, "f[0].factor: expected a number of at least 1, got 0.5"),
        ({"kind": "slowFirstByte", "share": 1}, "f[0].ms: required"),
        ({"kind": "quotaCut", "share": 1, "forS": 5}, "f[0].tokensPerMinute: required for a quotaCut"),
        (
            {"kind": "quotaCut", "share": 1, "tokensPerMinute": 0, "forS": 5},
            "f[0].tokensPerMinute: expected a whole number of at least 1, got 0",
        ),
        (
            {"kind": "quotaCut", "share": 1, "everyS": 5, "tokensPerMinute": 10, "forS": 1},
            "f[0].share: a quotaCut takes either share or everyS, not both",
        ),
    ],
)
def test_mistakes_name_the_field(spec, message):
    with pytest.raises(FaultError) as e:
        parse_profile([spec], "f")
    assert str(e.value).startswith(message), str(e.value)


def test_a_profile_must_be_a_list():
    with pytest.raises(FaultError, match=r"^f: expected a list of faults"):
        parse_profile({"kind": "503"}, "f")


def test_deployments_file_faults_and_the_default_entry(tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(
        json.dumps(
            {
                "*": {"faults": [{"kind": "503", "share": 0.1}]},
                "gpt-4o": {"model": "gpt-4o", "faults": [{"kind": "500", "share": 1}]},
                "quiet": {"model": "gpt-4o", "faults": []},
                "plain": {"model": "gpt-4o"},
            }
        )
    )
    deployments, default = cfg.load_deployments(str(path))
    assert set(deployments) == {"gpt-4o", "quiet", "plain"}  # "*" is no deployment
    assert default.to_json() == [{"kind": "503", "share": 0.1}]
    assert deployments["gpt-4o"].to_json()["faults"] == [{"kind": "500", "share": 1}]
    assert FaultBook.profile_for(deployments["plain"], default) is default
    assert FaultBook.profile_for(deployments["quiet"], default) is None  # an empty list: no faults, not the default
    assert FaultBook.profile_for(deployments["gpt-4o"], default) is deployments["gpt-4o"].faults
    assert cfg.load_deployments_file(str(path)).keys() == deployments.keys()


def test_deployments_file_errors_name_file_deployment_and_index(tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(
        json.dumps(
            {
                "gpt-4o": {
                    "model": "gpt-4o",
                    "faults": [
                        {"kind": "503", "share": 0.1},
                        {"kind": "500", "share": 0.1},
                        {"kind": "503", "share": 2},
                    ],
                }
            }
        )
    )
    with pytest.raises(ConfigError) as e:
        cfg.load_deployments(str(path))
    assert str(e.value) == f"{path}: gpt-4o.faults[2].share: expected a number from 0 to 1, got 2"
    path.write_text(json.dumps({"*": {"model": "gpt-4o"}}))
    with pytest.raises(ConfigError, match=r': \* entry|the "\*" entry holds only'):
        cfg.load_deployments(str(path))
    path.write_text(json.dumps({"*": {"faults": [{"kind": "nope", "share": 1}]}}))
    with pytest.raises(ConfigError, match=r"^.*deployments.json: \*\.faults\[0\]\.kind: expected one of"):
        cfg.load_deployments(str(path))


def test_share_zero_never_strikes_and_share_one_always():
    p = profile({"kind": "500", "share": 0}, {"kind": "503", "share": 1})
    rng = random.Random(3)
    for _ in range(2000):
        assert [f.kind for f in faults.draw(p, rng)] == ["503"]


def test_a_share_strikes_about_that_often():
    p = profile({"kind": "503", "share": 0.25})
    rng = random.Random(7)
    hits = sum(bool(faults.draw(p, rng)) for _ in range(4000))
    assert 850 < hits < 1150


def sequence(book: FaultBook, deployment: Deployment, seed, n=200) -> list:
    out = []
    for _ in range(n):
        choice = book.choose(deployment, None, seed)
        out.append((choice.answer.kind if choice.answer else None, tuple(f.kind for f in choice.shapes)))
    return out


def mixed() -> Deployment:
    dep = Deployment("gpt-4o", catalogue.MODELS["gpt-4o"])
    dep.faults = profile(
        {"kind": "503", "share": 0.2}, {"kind": "500", "share": 0.1}, {"kind": "trickle", "share": 0.3, "factor": 2}
    )
    return dep


def test_the_same_seed_gives_the_same_sequence():
    dep = mixed()
    first = sequence(FaultBook(), dep, 42)
    assert first == sequence(FaultBook(), dep, 42)
    assert first != sequence(FaultBook(), dep, 43)
    assert {a for a, _ in first} == {None, "503", "500"}
    # Each deployment draws from its own generator: another's traffic does not shift it.
    book, other = FaultBook(), mixed()
    other.name = "other"
    interleaved = []
    for _ in range(200):
        book.choose(other, None, 42)
        choice = book.choose(dep, None, 42)
        interleaved.append((choice.answer.kind if choice.answer else None, tuple(f.kind for f in choice.shapes)))
    assert interleaved == first


def test_a_new_profile_or_seed_starts_the_draws_afresh():
    dep, book = mixed(), FaultBook()
    first = sequence(book, dep, 5, 50)
    dep.faults = profile(*dep.faults.to_json())  # the same declaration, made again (a PATCH)
    assert sequence(book, dep, 5, 50) == first
    sequence(book, dep, 6, 10)
    assert sequence(book, dep, 5, 50) == first


def test_the_first_answering_fault_wins_and_shapes_combine():
    p = profile(
        {"kind": "slowFirstByte", "share": 1, "ms": 5},
        {"kind": "503", "share": 1},
        {"kind": "500", "share": 1},
        {"kind": "trickle", "share": 1, "factor": 2},
    )
    choice = faults.split(faults.draw(p, random.Random(1)))
    assert choice.answer.kind == "503"
    assert [f.kind for f in choice.shapes] == ["slowFirstByte", "trickle"]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_quota_cut_lowers_the_quota_for_its_period():
    clock = Clock()
    book = FaultBook(clock)
    dep = Deployment("d", catalogue.MODELS["gpt-4o"], tokens_per_minute=30000)
    dep.faults = profile({"kind": "quotaCut", "share": 1, "tokensPerMinute": 1000, "forS": 30})
    assert book.tokens_per_minute(dep, None, 1) == 30000
    book.choose(dep, None, 1)  # strikes: a cut begins
    assert book.tokens_per_minute(dep, None, 1) == 1000
    clock.now += 20
    book.choose(dep, None, 1)  # strikes again, but a cut is on: it does not stretch it
    clock.now += 10.5
    assert book.tokens_per_minute(dep, None, 1) == 30000
    assert book.injected[("d", "quotaCut")] == 1


def test_a_quota_cut_is_told_to_the_other_replicas_and_one_from_them_is_taken():
    clock, wall = Clock(), Clock()
    wall.now = 1_700_000_000.0
    book, told = FaultBook(clock, wall), []
    book.on_cut = lambda *cut: told.append(cut)
    dep = Deployment("d", catalogue.MODELS["gpt-4o"], tokens_per_minute=30000)
    dep.faults = profile({"kind": "quotaCut", "share": 1, "tokensPerMinute": 1000, "forS": 30})
    book.choose(dep, None, 1)
    assert told == [("d", wall.now + 30, 1000)]  # until on the wall clock the replicas share
    # Another replica's cut, on a book that drew none: in force until its end, as its own.
    other = FaultBook(clock, wall)
    other.on_cut = lambda *cut: told.append(cut)
    other.take_cut("d", wall.now + 10, 700)
    assert other.tokens_per_minute(dep, None, 1) == 700
    other.choose(dep, None, 1)  # a strike while the shared cut is on starts none here
    assert len(told) == 1 and other.injected[("d", "quotaCut")] == 0
    clock.now += 10.5
    assert other.tokens_per_minute(dep, None, 1) == 30000
    other.take_cut("d", wall.now - 1, 5)  # over already: ignored
    assert other.tokens_per_minute(dep, None, 1) == 30000


def test_a_periodic_quota_cut_counts_from_when_the_profile_was_declared():
    dep = Deployment("d", catalogue.MODELS["gpt-4o"])  # no quota of its own: the cut sets one
    dep.faults = profile({"kind": "quotaCut", "everyS": 10, "tokensPerMinute": 500, "forS": 2})
    clock = Clock()
    clock.now = dep.faults.since + 0.5
    book = FaultBook(clock)
    assert book.tokens_per_minute(dep, None, None) == 500
    clock.now += 2.5
    assert book.tokens_per_minute(dep, None, None) == 0
    clock.now += 8
    assert book.tokens_per_minute(dep, None, None) == 500
    assert not book.choose(dep, None, None).shapes  # no draw for a periodic cut


def plan(due: list[float], tokens: list[bool]) -> StreamPlan:
    return StreamPlan({}, [(d, b"frame%d" % i) for i, d in enumerate(due)], token_frames=list(tokens))


def test_a_stream_cut_after_tokens_keeps_that_many_token_frames():
    p = plan([0, 0.1, 0.2, 0.3, 0.4, 0.4], [False, True, True, True, False, False])
    applied = faults.shape_stream(p, list(profile({"kind": "streamCut", "share": 1, "afterTokens": 2}).faults))
    assert applied == ["streamCut"] and p.cut
    assert [d for d, _ in p.frames] == [0, 0.1, 0.2] and p.token_frames == [False, True, True]


def test_a_stream_shorter_than_the_cut_is_not_cut():
    p = plan([0, 0.1, 0.2], [False, True, False])
    assert faults.shape_stream(p, list(profile({"kind": "streamCut", "share": 1, "afterTokens": 1}).faults)) == []
    assert not p.cut and len(p.frames) == 3


def test_a_stream_cut_after_a_time_drops_at_that_time():
    p = plan([0, 0.1, 0.2, 0.3], [False, True, True, True])
    faults.shape_stream(p, list(profile({"kind": "streamCut", "share": 1, "afterMs": 250}).faults))
    assert p.cut and [d for d, _ in p.frames] == [0, 0.1, 0.2, 0.25] and p.frames[-1][1] == b""


def test_slow_first_byte_and_trickle_reshape_a_plan():
    p = plan([0, 0.5, 0.6, 0.7], [False, True, True, True])
    applied = faults.shape_stream(
        p,
        list(
            profile(
                {"kind": "slowFirstByte", "share": 1, "ms": 1000}, {"kind": "trickle", "share": 1, "factor": 3}
            ).faults
        ),
    )
    assert applied == ["slowFirstByte", "trickle"] and not p.cut
    assert p.head_delay_s == 1.0
    assert [round(d, 6) for d, _ in p.frames] == [1.0, 1.5, 1.8, 2.1]


def test_waits_of_answers_sent_at_once():
    shapes = list(
        profile(
            {"kind": "slowFirstByte", "share": 1, "ms": 500},
            {"kind": "trickle", "share": 1, "factor": 4},
            {"kind": "streamCut", "share": 1, "afterTokens": 1},
        ).faults
    )
    assert faults.shape_wait(1.0, shapes) == (4.5, ["trickle", "slowFirstByte"])
    assert faults.shape_wait(0.0, shapes) == (0.5, ["slowFirstByte"])


def test_the_view_shows_profiles_cuts_and_counts():
    clock = Clock()
    book = FaultBook(clock)
    default = profile({"kind": "503", "share": 1})
    own = Deployment("own", catalogue.MODELS["gpt-4o"], tokens_per_minute=9000)
    own.faults = profile({"kind": "quotaCut", "everyS": 60, "tokensPerMinute": 100, "forS": 5})
    clock.now = own.faults.since
    plain = Deployment("plain", catalogue.MODELS["gpt-4o"])
    quiet = Deployment("quiet", catalogue.MODELS["gpt-4o"])
    quiet.faults = profile()
    book.count("plain", "503")
    view = book.view({"own": own, "plain": plain, "quiet": quiet}, default, 7)
    assert view == {
        "seed": 7,
        "default": [{"kind": "503", "share": 1}],
        "deployments": {
            "own": {
                "faults": [{"kind": "quotaCut", "everyS": 60, "tokensPerMinute": 100, "forS": 5}],
                "from": "deployment",
                "tokensPerMinuteNow": 100,
            },
            "plain": {"faults": [{"kind": "503", "share": 1}], "from": "default"},
        },
        "injected": {"plain": {"503": 1}},
        "hanging": 0,
    }
