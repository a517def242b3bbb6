"""Disks and files in record and replay mode, end to end: a recording that cannot be written
never costs the client its answer; a folder that cannot be recorded to, or a hand-broken
recording, stops start-up with one line."""

from __future__ import annotations

import subprocess

from conftest import API_VERSION, start_simulator
from fake_azure import UPSTREAM_KEY, FakeAzure
from openai import AzureOpenAI, NotFoundError

MESSAGES = [{"role": "user", "content": "Hello!"}]


def test_an_unwritable_recording_file_costs_no_answer_and_is_said_once(simulator_factory, tmp_path):
    folder = tmp_path / "recordings"
    (folder / "gpt-4o.chat-completions.yaml").mkdir(parents=True)  # no file can be written there
    with FakeAzure() as upstream:
        sim = simulator_factory(
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                "RECORDING_DIR": str(folder),
            }
        )
        client = AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)
        for i in range(3):
            answer = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, user=f"u{i}")
            assert answer.choices[0].message.content == "Upstream says: Hello!"
        # Other files are still written.
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert sim.log().count("cannot write recordings to") == 1
    assert (folder / "text-embedding-3-small.embeddings.yaml").is_file()


def failed_start(tmp_path, env) -> str:
    sim = start_simulator(tmp_path, env, wait=False)
    try:
        assert sim.process.wait(timeout=40) != 0
    except subprocess.TimeoutExpired:
        sim.stop()
        raise AssertionError(f"the simulator kept running:\n{sim.log()}") from None
    lines = [line for line in sim.log().splitlines() if line.strip() and "Loading script" not in line]
    assert len(lines) == 1 and "Traceback" not in sim.log(), sim.log()
    return lines[0]


def test_a_folder_that_cannot_be_recorded_to_stops_start_up_with_one_line(tmp_path):
    line = failed_start(
        tmp_path,
        {
            "SIMULATOR_MODE": "record",
            "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
            "RECORDING_DIR": "/proc/aoai-simulator-recordings",
        },
    )
    assert line.startswith(
        "Cannot start the simulator: RECORDING_DIR: cannot record to /proc/aoai-simulator-recordings: "
    )


def test_a_hand_broken_recording_stops_replay_start_up_naming_file_and_line(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    good = (
        "---\nrequest:\n  method: POST\n  path: /openai/deployments/gpt-4o/chat/completions\n  body: {}\n"
        "response:\n  status: 200\n  body: {}\n"
    )
    (folder / "gpt-4o.chat-completions.yaml").write_text(good + "---\nrequest: [oops\n" + good)
    line = failed_start(tmp_path, {"SIMULATOR_MODE": "replay"})
    assert "gpt-4o.chat-completions.yaml: line 9: a recorded interaction does not parse" in line
    assert "RECORDING_SKIP_BROKEN=true" in line


def test_a_recording_cut_off_by_a_crash_costs_only_itself(simulator_factory, tmp_path):
    folder = tmp_path / "recordings"
    record = {
        "SIMULATOR_MODE": "record",
        "AZURE_OPENAI_KEY": UPSTREAM_KEY,
        "RECORDING_DIR": str(folder),
    }
    file = folder / "gpt-4o.chat-completions.yaml"

    def ask(sim, user: str) -> int:
        client = AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)
        try:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, user=user)
        except NotFoundError:
            return 404
        return 200

    with FakeAzure() as upstream:
        sim = simulator_factory({**record, "AZURE_OPENAI_ENDPOINT": upstream.url})
        assert ask(sim, "first") == ask(sim, "second") == 200
        sim.stop()
        data = file.read_bytes()
        # As a crash while the second was written leaves it: cut off inside its answer's text.
        file.write_bytes(data[: data.rindex(b"content: 'Upstream") + len(b"content: 'Upstr")])
        sim = simulator_factory({**record, "AZURE_OPENAI_ENDPOINT": upstream.url})
        assert ask(sim, "third") == 200
        assert "skipped a recorded interaction that does not parse" in sim.log()
        sim.stop()
    for index in (folder / ".index").iterdir():
        index.unlink()  # as a fresh copy of the folder has it: read anew, the cut-off one now in the middle
    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    assert [ask(sim, user) for user in ("first", "second", "third")] == [200, 404, 200]
    assert "a crash may have cut it off while it was written" in sim.log()
