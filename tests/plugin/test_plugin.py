"""The pytest plugin (addons/aoai_simulator.py) as a suite meets it, run by pytest's pytester:
the session's simulator and its helpers, the `aoai` marker applied to one test and undone
after it, a bad marker failing its own test in one line, one simulator per xdist worker."""

from __future__ import annotations

import time

import pytest
from conftest import ROOT

PLUGIN = ("-p", "aoai_simulator")


@pytest.fixture(autouse=True)
def _plugin_on_the_path(monkeypatch) -> None:
    """Each run is a pytest of its own, as a suite's is (one in this process would share the
    modules it imports with this one); the plugin is found as from a checkout."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "addons"))


def test_the_fixture_serves_every_client_and_an_application_in_a_subprocess(pytester):
    pytester.makepyfile(
        """
        import asyncio, os, subprocess, sys

        CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}

        def test_azure_client(aoai_simulator):
            answer = aoai_simulator.azure_client().chat.completions.create(**CHAT)
            assert answer.choices[0].message.content

        def test_async_azure_client(aoai_simulator):
            async def chat():
                async with aoai_simulator.async_azure_client() as client:
                    return await client.chat.completions.create(**CHAT)
            assert asyncio.run(chat()).choices[0].message.content

        def test_v1_client(aoai_simulator):
            assert aoai_simulator.v1_client().chat.completions.create(**CHAT).choices[0].message.content

        def test_env_reaches_a_subprocess(aoai_simulator):
            code = (
                "from openai import AzureOpenAI; c = AzureOpenAI(); "
                "print(c.chat.completions.create(model='gpt-4o', messages=[{'role': 'user', 'content': 'Hi'}], "
                "max_tokens=3).choices[0].message.content)"
            )
            done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **aoai_simulator.env()},
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip()

        def test_settings_from_the_ini_file_then_the_command_line(aoai_simulator):
            assert aoai_simulator.config()["seed"] == 12

        def test_management_helpers(aoai_simulator):
            aoai_simulator.patch({"deployments": {"extra": {"model": "gpt-4o-mini"}}})
            assert "extra" in aoai_simulator.config()["deployments"]
            aoai_simulator.patch({"deployments": {"extra": None}})
            aoai_simulator.reset_limits()
            assert "aoai_" in aoai_simulator.metrics()
            assert aoai_simulator.base_url.startswith("http://127.0.0.1:") and aoai_simulator.key
        """
    )
    pytester.makeini("[pytest]\naoai_env =\n    SIMULATOR_SEED=11\n    SIMULATOR_LATENCY=false\n")
    result = pytester.runpytest_subprocess(*PLUGIN, "--aoai-env", "SIMULATOR_SEED=12")
    result.assert_outcomes(passed=6)


ISOLATION = """
    import openai, pytest

    CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}
    START = {}

    def client(sim):
        return sim.azure_client(max_retries=0)

    def test_first_the_configuration_is_noted(aoai_simulator):
        START.update(aoai_simulator.config())

    @pytest.mark.aoai(deployments={"gpt-4o": {"model": "gpt-4o", "requestsPerMinute": 1}})
    def test_a_quota_of_one_request(aoai_simulator):
        client(aoai_simulator).chat.completions.create(**CHAT)
        with pytest.raises(openai.RateLimitError):
            client(aoai_simulator).chat.completions.create(**CHAT)

    def test_the_next_test_is_not_throttled(aoai_simulator):
        for _ in range(5):
            client(aoai_simulator).chat.completions.create(**CHAT)

    @pytest.mark.aoai(faults=[{"kind": "503", "share": 1}])
    def test_a_503_profile(aoai_simulator):
        with pytest.raises(openai.InternalServerError) as raised:
            client(aoai_simulator).chat.completions.create(**CHAT)
        assert raised.value.status_code == 503

    def test_the_503_profile_does_not_leak(aoai_simulator):
        client(aoai_simulator).chat.completions.create(**CHAT)

    @pytest.mark.aoai(
        deployments={"filtered": {"model": "gpt-4o-mini"}},
        content_filter={"filtered": {"prompt": {"violence": ["sword"]}}},
        seed=7,
    )
    def test_an_added_deployment_with_a_content_filter(aoai_simulator):
        with pytest.raises(openai.BadRequestError) as raised:
            client(aoai_simulator).chat.completions.create(
                model="filtered", messages=[{"role": "user", "content": "a sword"}], max_tokens=5
            )
        assert raised.value.code == "content_filter"
        assert aoai_simulator.config()["seed"] == 7

    @pytest.mark.aoai(faults=[{"kind": "503", "share": 1}])
    def test_a_failing_marked_test(aoai_simulator):
        raise AssertionError("the marker is undone all the same")

    @pytest.mark.aoai(seed=1, deployments={"a": {"model": "gpt-4o"}, "b": {"model": "gpt-4o"}})
    class TestMarkersCombine:
        @pytest.mark.aoai(seed=2, deployments={"b": {"model": "gpt-4o-mini"}})
        def test_the_closest_wins(self, aoai_simulator):
            config = aoai_simulator.config()
            assert config["seed"] == 2
            assert config["deployments"]["a"]["model"] == "gpt-4o"
            assert config["deployments"]["b"]["model"] == "gpt-4o-mini"

    def test_last_everything_is_as_it_was(aoai_simulator):
        assert aoai_simulator.config() == START
        client(aoai_simulator).chat.completions.create(**CHAT)
"""


def test_a_marker_applies_to_its_test_only(pytester):
    pytester.makepyfile(ISOLATION)
    result = pytester.runpytest_subprocess(*PLUGIN)
    result.assert_outcomes(passed=8, failed=1)
    result.stdout.fnmatch_lines(["*test_a_failing_marked_test*"])


def test_a_bad_marker_fails_its_test_in_one_line_and_the_session_goes_on(pytester):
    pytester.makepyfile(
        """
        import pytest

        def test_before(aoai_simulator):
            pass

        @pytest.mark.aoai(deployments={"gpt-4o": {"model": "gpt-4o", "tokensPerMinutes": 10}})
        def test_misspelt_field(aoai_simulator):
            raise AssertionError("never runs")

        @pytest.mark.aoai(fault=[])
        def test_unknown_argument():
            raise AssertionError("never runs")

        def test_after(aoai_simulator):
            assert aoai_simulator.config()["deployments"]["gpt-4o"].get("tokensPerMinute") != 10
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.aoai: deployments.gpt-4o: unknown field 'tokensPerMinutes'",
            "@pytest.mark.aoai: unknown argument 'fault'; use deployments, faults, content_filter, seed",
        ],
        consecutive=False,
    )
    assert "never runs" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_each_xdist_worker_has_its_own_simulator(pytester, monkeypatch):
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_note(aoai_simulator, n, tmp_path_factory):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            aoai_simulator.azure_client().chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
            with open(os.environ["NOTES"], "a") as notes:
                notes.write(f"{worker} {aoai_simulator.base_url}\\n")
        """
    )
    notes = pytester.path / "notes.txt"
    monkeypatch.setenv("NOTES", str(notes))
    result = pytester.runpytest_subprocess(*PLUGIN, "-n", "2")
    result.assert_outcomes(passed=4)
    seen = {tuple(line.split()) for line in notes.read_text().splitlines()}
    workers = {worker for worker, _ in seen}
    urls = {url for _, url in seen}
    assert workers == {"gw0", "gw1"}
    assert len(urls) == 2, seen


def test_a_marker_is_applied_and_undone_in_milliseconds(aoai_simulator):
    """What the marker adds to a test: GET the configuration, PATCH it, PATCH it back."""
    from aoai_simulator import undo_body

    body = {
        "deployments": {"gpt-4o": {"model": "gpt-4o", "tokensPerMinute": 1000}},
        "faults": [{"kind": "503", "share": 1}],
    }
    times = []
    for _ in range(20):
        begun = time.perf_counter()
        before = aoai_simulator.config()
        aoai_simulator.patch({**body, "resetLimits": True})
        aoai_simulator.patch(undo_body(before, body))
        times.append(time.perf_counter() - begun)
    times.sort()
    assert times[len(times) // 2] < 0.1, f"median {times[len(times) // 2] * 1000:.1f} ms"


def test_a_setting_that_is_not_name_equals_value_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(*PLUGIN, "--aoai-env", "NOEQUALS")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--aoai-env / aoai_env: expected NAME=VALUE*"])
