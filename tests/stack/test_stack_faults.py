"""Declared faults that answer, through the in-process stack: a deployments file that gives
each deployment one fault at share 1; the 503 and its retry-after, the default for undefined
names, GET /++/faults with the metrics counter, PATCH at run time, and a seeded run that gives
the same sequence twice. (Timing, hangs, streams and the SDK: tests/e2e/test_e2e_faults.py.)
"""

from __future__ import annotations

import json

import pytest
from conftest import API_VERSION, stack_environment
from helpers import FAST, HELLO, assert_azure_error, only, scrape, value
from inprocess import Stack

# The deployments of tests/e2e/test_e2e_faults.py these tests call.
DEPLOYMENTS = {
    "*": {"faults": only(kind="503", retryAfter=1)},
    "err500": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="500")},
    "err503": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="503", retryAfter=2)},
    "steady": {"model": "gpt-4o", "latency": FAST, "faults": []},
    "patched": {"model": "gpt-4o", "latency": FAST},
}
SEEDED = {
    "flaky": {
        "model": "gpt-4o",
        "latency": FAST,
        "faults": [
            {"kind": "503", "share": 0.4},
            {"kind": "500", "share": 0.2},
            {"kind": "contextLength", "share": 0.1},
        ],
    }
}


def deployments_file(folder, deployments) -> str:
    path = folder / "deployments.json"
    path.write_text(json.dumps(deployments))
    return str(path)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    # Latency as the deployments declare it (the end-to-end module's simulator keeps it on).
    env = {"OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(folder, DEPLOYMENTS), "SIMULATOR_LATENCY": "true"}
    with stack_environment(folder, env):
        stack = Stack.start()
        yield stack
        stack.stop()


def chat(sim, deployment: str, **body):
    return sim.post(
        f"/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}",
        json={"messages": HELLO, "max_tokens": 20, **body},
    )


def faults_view(sim) -> dict:
    r = sim.get("/++/faults")
    assert r.status_code == 200, r.text
    return r.json()


def patch(sim, body):
    return sim.patch("/++/config", json=body)


def statuses(stack_factory, folder, seed: str) -> list[int]:
    s = stack_factory(
        {
            "OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(folder, SEEDED),
            "SIMULATOR_SEED": seed,
            "SIMULATOR_LATENCY": "false",
        }
    )
    return [chat(s, "flaky").status_code for _ in range(40)]


def test_503_says_when_to_retry(sim):
    r = chat(sim, "err503")
    assert_azure_error(
        r,
        503,
        "ServiceUnavailable",
        "The service is temporarily unable to process your request. Please try again later.",
    )
    assert r.headers["retry-after"] == "2"
    assert r.headers["x-ms-region"] and r.headers["x-request-id"]


def test_the_default_covers_undefined_names(sim):
    r = chat(sim, "not-in-the-file")
    assert_azure_error(r, 503, "ServiceUnavailable")
    assert r.headers["retry-after"] == "1"
    assert chat(sim, "steady").status_code == 200  # an empty list: no faults, not the default


def test_faults_view_and_metrics(sim):
    chat(sim, "err500")
    view = faults_view(sim)
    assert view["seed"] == 1
    assert view["default"] == [{"kind": "503", "share": 1, "retryAfter": 1}]
    assert view["deployments"]["err500"] == {"faults": [{"kind": "500", "share": 1}], "from": "deployment"}
    assert "steady" not in view["deployments"]
    assert view["injected"]["err500"]["500"] >= 1
    samples = scrape(sim)
    assert (
        value(samples, "aoai_faults_injected_total", deployment="err500", kind="500")
        == view["injected"]["err500"]["500"]
    )
    config = sim.get("/++/config").json()
    assert config["faults"] == view["default"]
    assert config["deployments"]["err500"]["faults"] == [{"kind": "500", "share": 1}]


def test_patch_changes_faults_at_run_time(sim):
    assert chat(sim, "patched").status_code == 503  # the default
    r = patch(sim, {"deployments": {"patched": {"faults": [{"kind": "500", "share": 1}]}}})
    assert r.status_code == 200, r.text
    assert chat(sim, "patched").status_code == 500
    assert faults_view(sim)["deployments"]["patched"]["from"] == "deployment"
    # Only the faults changed: the deployment keeps its latency.
    assert sim.get("/++/config").json()["deployments"]["patched"]["latency"]["timeToFirstTokenMs"] == {
        "mean": 20,
        "stdDev": 0,
    }
    r = patch(sim, {"deployments": {"patched": {"faults": [{"kind": "500", "share": 2}]}}})
    assert_azure_error(r, 400, "BadRequest", "deployments.patched.faults[0].share: expected a number from 0 to 1")
    assert chat(sim, "patched").status_code == 500  # unchanged by the refused PATCH
    assert patch(sim, {"deployments": {"patched": {"faults": None}}}).status_code == 200
    assert chat(sim, "patched").status_code == 503  # back to the default
    assert patch(sim, {"faults": []}).status_code == 200
    try:
        assert chat(sim, "patched").status_code == 200
        assert faults_view(sim)["default"] == []
    finally:
        assert patch(sim, {"faults": DEPLOYMENTS["*"]["faults"]}).status_code == 200


def test_a_seeded_run_gives_the_same_sequence_twice(stack_factory, tmp_path):
    first = statuses(stack_factory, tmp_path, "11")
    assert statuses(stack_factory, tmp_path, "11") == first
    assert {200, 503, 500, 400} <= set(first)
    assert statuses(stack_factory, tmp_path, "12") != first
