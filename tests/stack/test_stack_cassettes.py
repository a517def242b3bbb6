"""PUT /++/cassette through the in-process stack, with a fake Azure on loopback: each record
mode (none, once, new_episodes, all), taking the cassette out, pending recordings saved at a
switch, a cassette that does not parse, bad bodies, record modes without an upstream, and how
long a switch takes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from conftest import API_VERSION
from fake_azure import UPSTREAM_KEY, FakeAzure

CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
EMBED = f"/openai/deployments/text-embedding-3-small/embeddings?api-version={API_VERSION}"


def put(sim, path: Path | str | None, mode: str | None = "none"):
    body = {"path": None if path is None else str(path)}
    if mode is not None:
        body["mode"] = mode
    return sim.request("PUT", "/++/cassette", json=body)


def use(sim, path: Path | None, mode: str = "none") -> dict:
    r = put(sim, path, mode)
    assert r.status_code == 200, r.text
    return r.json()


def ask(sim, content: str):
    return sim.post(CHAT, json={"messages": [{"role": "user", "content": content}], "max_tokens": 5})


def said(sim, content: str) -> str:
    r = ask(sim, content)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture
def upstream():
    with FakeAzure() as fake:
        yield fake


@pytest.fixture
def sim(stack_factory, upstream, tmp_path):
    """A simulator in generate mode that can record: as a test session's simulator starts."""
    return stack_factory(
        {
            "AZURE_OPENAI_ENDPOINT": upstream.url,
            "AZURE_OPENAI_KEY": UPSTREAM_KEY,
            "RECORDING_DIR": str(tmp_path / "recordings"),
        }
    )


def test_once_records_when_absent_then_replays(sim, upstream, tmp_path):
    cassette = tmp_path / "cassettes" / "test_mod" / "test_one.yaml"
    put_in = use(sim, cassette, "once")
    assert put_in == {
        "path": str(cassette),
        "mode": "once",
        "recording": True,
        "interactions": 0,
        "simulatorMode": "record",
        "saved": 0,
    }
    assert said(sim, "hello") == "Upstream says: hello"
    sim.post(EMBED, json={"input": "words"})  # another route: the same file all the same
    assert len(upstream.requests) == 2
    assert use(sim, None)["simulatorMode"] == "generate"
    assert [d["request"]["method"] for d in documents(cassette)] == ["POST", "POST"]
    assert UPSTREAM_KEY not in cassette.read_text()
    assert not (tmp_path / "recordings").exists() or not list((tmp_path / "recordings").glob("*.yaml"))
    # Present now: replayed, never forwarded.
    again = use(sim, cassette, "once")
    assert again["recording"] is False and again["interactions"] == 2 and again["simulatorMode"] == "replay"
    assert said(sim, "hello") == "Upstream says: hello"
    assert len(upstream.requests) == 2


def test_none_replays_and_a_miss_names_the_closest(sim, upstream, tmp_path):
    cassette = tmp_path / "c.yaml"
    use(sim, cassette, "all")
    said(sim, "hello")
    use(sim, cassette, "none")
    assert said(sim, "hello") == "Upstream says: hello"
    r = ask(sim, "goodbye")
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "RecordingNotFound"
    assert error["file"] == str(cassette)
    assert error["closest"]["differs"] == ["messages"]
    assert len(upstream.requests) == 1
    # An absent cassette in mode none: every request misses (nothing is forwarded or written).
    absent = tmp_path / "absent.yaml"
    assert use(sim, absent, "none")["interactions"] == 0
    assert ask(sim, "hello").status_code == 404
    assert not absent.exists() and len(upstream.requests) == 1


def test_new_episodes_answers_what_it_holds_and_records_the_rest(sim, upstream, tmp_path):
    cassette = tmp_path / "c.yaml"
    use(sim, cassette, "once")
    said(sim, "first")
    put_in = use(sim, cassette, "new_episodes")
    assert put_in["recording"] is True and put_in["interactions"] == 1
    said(sim, "first")
    said(sim, "second")
    assert [r["body"]["messages"][0]["content"] for r in upstream.requests] == ["first", "second"]
    use(sim, None)
    assert len(documents(cassette)) == 2


def test_all_records_anew(sim, upstream, tmp_path):
    cassette = tmp_path / "c.yaml"
    use(sim, cassette, "once")
    said(sim, "old")
    put_in = use(sim, cassette, "all")
    assert put_in["interactions"] == 0 and put_in["recording"] is True
    said(sim, "new")
    said(sim, "new")  # forwarded again: nothing is answered from a cassette written anew
    assert len(upstream.requests) == 3
    use(sim, None)
    assert [d["request"]["body"]["messages"][0]["content"] for d in documents(cassette)] == ["new", "new"]
    # A test that records nothing under "all" leaves no cassette (as vcrpy saves none).
    use(sim, cassette, "all")
    use(sim, None)
    assert not cassette.exists()


def test_taking_it_out_goes_back_to_the_configured_mode(sim, upstream, tmp_path):
    use(sim, tmp_path / "c.yaml", "once")
    assert sim.get("/++/health").json()["mode"] == "record"
    # A configuration change while it is in leaves its mode alone, and is in force after.
    assert sim.patch("/++/config", json={"seed": 7}).status_code == 200
    assert sim.get("/++/health").json()["mode"] == "record"
    out = use(sim, None)
    assert out == {
        "path": None,
        "mode": None,
        "recording": False,
        "interactions": 0,
        "simulatorMode": "generate",
        "saved": 0,
    }
    assert said(sim, "hello") != "Upstream says: hello"  # generated again
    assert sim.get("/++/config").json()["seed"] == 7


def test_pending_recordings_are_saved_to_the_previous_cassette_at_a_switch(stack_factory, upstream, tmp_path):
    sim = stack_factory(
        {
            "AZURE_OPENAI_ENDPOINT": upstream.url,
            "AZURE_OPENAI_KEY": UPSTREAM_KEY,
            "RECORDING_DIR": str(tmp_path / "recordings"),
            "RECORDING_AUTOSAVE": "false",
        }
    )
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    use(sim, first, "once")
    said(sim, "one")
    said(sim, "two")
    assert not first.exists()
    switched = use(sim, second, "once")
    assert switched["saved"] == 2
    assert len(documents(first)) == 2
    said(sim, "three")
    assert use(sim, None)["saved"] == 1
    assert [d["request"]["body"]["messages"][0]["content"] for d in documents(second)] == ["three"]


def test_a_cassette_that_does_not_parse_is_refused_and_the_simulator_keeps_serving(sim, tmp_path):
    good, broken = tmp_path / "good.yaml", tmp_path / "broken.yaml"
    broken.write_text("request:\n  method: POST\n  path: [unclosed\n---\nrequest: {}\n")
    use(sim, good, "none")
    r = put(sim, broken, "none")
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert str(broken) in message and "line 1" in message
    # The cassette in before is in still.
    assert ask(sim, "hello").json()["error"]["file"] == str(good)


@pytest.mark.parametrize(
    "body, field",
    [
        ([1], "body"),
        ({"mode": "none"}, "path"),
        ({"path": "relative/c.yaml"}, "path"),
        ({"path": 3}, "path"),
        ({"path": "/tmp/c.yaml", "mode": "sometimes"}, "mode"),
        ({"path": "/tmp/c.yaml", "mode": "none", "extra": 1}, "extra"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(sim, body, field):
    r = sim.request("PUT", "/++/cassette", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(f"{field}:")


def test_a_folder_is_not_a_cassette(sim, tmp_path):
    r = put(sim, tmp_path, "none")
    assert r.status_code == 400 and "is a folder" in r.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["once", "new_episodes", "all"])
def test_record_modes_need_an_upstream(stack_factory, tmp_path, mode):
    sim = stack_factory({"RECORDING_DIR": str(tmp_path / "recordings")})
    r = put(sim, tmp_path / "c.yaml", mode)
    assert r.status_code == 400, r.text
    assert "AZURE_OPENAI_ENDPOINT" in r.json()["error"]["message"]
    assert sim.get("/++/health").json()["mode"] == "generate"
    # Replaying needs none; nor does "once" when the cassette is there.
    assert use(sim, tmp_path / "c.yaml", "none")["recording"] is False
    (tmp_path / "there.yaml").write_text("")
    assert use(sim, tmp_path / "there.yaml", "once")["recording"] is False


def test_a_switch_of_a_small_cassette_is_quick(sim, tmp_path):
    cassette = tmp_path / "c.yaml"
    use(sim, cassette, "once")
    for i in range(20):
        said(sim, f"question {i}")
    use(sim, None)
    took = []
    for _ in range(5):
        started = time.perf_counter()
        assert use(sim, cassette, "none")["interactions"] == 20
        use(sim, None)
        took.append((time.perf_counter() - started) / 2)
    assert min(took) < 0.2, took
