"""`aoai_cassette` in every record mode, as vcrpy users know them, with this suite's own
simulator as the upstream the cassettes are recorded from: `once` records a cassette that is
absent and replays one that is there, `new_episodes` adds what it lacks, `all` records it anew,
`none` replays and fails a test on a miss with the closest recording's differences; a cassette
that does not parse fails its own test in one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from aoai_simulator import cassette_path
from conftest import ROOT

PLUGIN = ("-p", "aoai_simulator")

TALK = """
    import json, os

    def ask(sim, question):
        client = sim.azure_client(max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": question}], max_tokens=8
        )
        return answer.choices[0].message.content

    def test_talk(aoai_simulator, aoai_cassette):
        answers = {q: ask(aoai_simulator, q) for q in os.environ["QUESTIONS"].split(",")}
        with open(os.environ["NOTES"], "a") as notes:
            notes.write(json.dumps({"recording": aoai_cassette.recording, "held": aoai_cassette.interactions,
                                    "answers": answers}) + "\\n")
"""


@pytest.fixture
def talk(pytester, monkeypatch, aoai_simulator):
    """A suite with one test asking $QUESTIONS, recording from this session's simulator."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "addons"))
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", aoai_simulator.base_url)
    monkeypatch.setenv("AZURE_OPENAI_KEY", aoai_simulator.key)
    monkeypatch.setenv("NOTES", str(pytester.path / "notes.jsonl"))
    pytester.makepyfile(test_talk=TALK)

    def run(mode: str, questions: str, *args: str):
        monkeypatch.setenv("QUESTIONS", questions)
        return pytester.runpytest_subprocess(*PLUGIN, f"--aoai-record-mode={mode}", *args)

    return run


def notes(pytester) -> list[dict]:
    return [json.loads(line) for line in (pytester.path / "notes.jsonl").read_text().splitlines()]


def interactions(path: Path) -> int:
    return sum(1 for document in yaml.safe_load_all(path.read_text()) if isinstance(document, dict))


def test_every_record_mode(pytester, talk, monkeypatch, aoai_simulator):
    cassette = pytester.path / "cassettes" / "test_talk" / "test_talk.yaml"

    talk("once", "one").assert_outcomes(passed=1)  # absent: recorded
    assert cassette.exists() and interactions(cassette) == 1
    assert aoai_simulator.key not in cassette.read_text()  # the upstream's key is never written
    recorded = notes(pytester)[-1]
    assert recorded["recording"] is True

    # Replayed without an upstream at all.
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT")
    monkeypatch.delenv("AZURE_OPENAI_KEY")
    talk("none", "one").assert_outcomes(passed=1)
    assert notes(pytester)[-1]["answers"] == recorded["answers"]
    assert notes(pytester)[-1]["held"] == 1

    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", aoai_simulator.base_url)
    monkeypatch.setenv("AZURE_OPENAI_KEY", aoai_simulator.key)
    # There: `once` replays only, so a new question misses.
    talk("once", "one,two").assert_outcomes(failed=1)
    assert interactions(cassette) == 1

    talk("new_episodes", "one,two").assert_outcomes(passed=1)  # what it holds answered, the rest added
    assert notes(pytester)[-1]["answers"]["one"] == recorded["answers"]["one"]
    assert interactions(cassette) == 2

    talk("all", "three").assert_outcomes(passed=1)  # recorded anew: the old content dropped
    assert interactions(cassette) == 1


def test_a_miss_in_none_fails_the_test_with_the_closest_recordings_differences(pytester, talk):
    folder = pytester.path / "recorded"
    talk("once", "What is the capital of France?", "--aoai-cassette-dir=recorded").assert_outcomes(passed=1)
    assert (folder / "test_talk" / "test_talk.yaml").exists()

    result = talk("none", "What is the capital of Spain?", "--aoai-cassette-dir=recorded")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "No recording matches" in output
    assert "The closest recorded request is" in output and "differs in:" in output
    assert "messages" in output.partition("differs in:")[2]
    result.stdout.fnmatch_lines(["*aoai cassette*", "*--aoai-record-mode=once*"])


def test_a_cassette_that_does_not_parse_fails_its_test_in_one_line(pytester, talk):
    pytester.makepyfile(test_other="def test_other(aoai_simulator):\n    assert aoai_simulator.config()\n")
    cassette = pytester.path / "cassettes" / "test_talk" / "test_talk.yaml"
    cassette.parent.mkdir(parents=True)
    cassette.write_text("request:\n  method: POST\n  path: [unclosed\n---\nrequest: {}\n")
    result = talk("none", "one")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["aoai_cassette test_talk.yaml: *test_talk.yaml*"])
    assert "Traceback" not in result.stdout.str()


def item(nodeid: str, path: Path) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, path=path, name=nodeid.rpartition("::")[2])


@pytest.mark.parametrize(
    ("nodeid", "name"),
    [
        ("tests/test_app.py::test_chat", "test_chat.yaml"),
        ("tests/test_app.py::TestChat::test_stream", "TestChat.test_stream.yaml"),
        ("tests/test_app.py::test_chat[gpt-4o/mini 2]", "test_chat-gpt-4o-mini-2.yaml"),
    ],
)
def test_a_cassette_is_named_after_its_module_and_test(tmp_path, nodeid, name):
    test_file = tmp_path / "tests" / "test_app.py"
    assert (
        cassette_path(item(nodeid, test_file), None, tmp_path) == tmp_path / "tests" / "cassettes" / "test_app" / name
    )
    assert cassette_path(item(nodeid, test_file), "tapes", tmp_path) == tmp_path / "tapes" / "test_app" / name
