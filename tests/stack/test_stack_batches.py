"""Batch jobs through the whole stack, in process: an input file uploaded, a job created,
run in the background through Azure's statuses, its lines answered by the simulator's own
stages, and its results downloaded; validation errors, cancel, the enqueued-token quota and a
fast-forward past the 24-hour window."""

from __future__ import annotations

import json
import time

import pytest
from test_stack_files import upload

V1 = "/openai/v1"
FAST = {"BATCH_VALIDATING_SECONDS": "0", "BATCH_LINE_SECONDS": "0", "BATCH_FINALIZING_SECONDS": "0"}
BATCH_DEPLOYMENT = {"gpt-4o-batch": {"model": "gpt-4o", "sku": "GlobalBatch"}}


def lines(n: int, deployment: str = "gpt-4o-batch", url: str = "/chat/completions", **body) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"task-{i}",
                "method": "POST",
                "url": url,
                "body": {"model": deployment, "messages": [{"role": "user", "content": f"Say {i}"}], **body},
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


@pytest.fixture
def stack(stack_factory):
    stack = stack_factory(FAST)
    assert stack.patch("/++/config", json={"deployments": BATCH_DEPLOYMENT}).status_code == 200
    return stack


def submit(stack, data: bytes, endpoint: str = "/chat/completions") -> dict:
    made = upload(stack, f"{V1}/files", {"purpose": "batch"}, data).json()
    r = stack.post(
        f"{V1}/batches", json={"input_file_id": made["id"], "endpoint": endpoint, "completion_window": "24h"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait(stack, batch_id: str, statuses=("completed", "failed", "cancelled", "expired"), within: float = 30) -> dict:
    deadline = time.monotonic() + within
    while True:
        batch = stack.get(f"{V1}/batches/{batch_id}").json()
        if batch["status"] in statuses:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)


def content(stack, file_id: str) -> list[dict]:
    return [json.loads(line) for line in stack.get(f"{V1}/files/{file_id}/content").content.splitlines()]


def test_a_job_runs_to_completion_and_its_results_are_downloaded(stack):
    created = submit(stack, lines(40))
    assert created["status"] == "validating" and created["object"] == "batch"
    done = wait(stack, created["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    for key in ("in_progress_at", "finalizing_at", "completed_at"):
        assert isinstance(done[key], int)
    results = content(stack, done["output_file_id"])
    assert sorted(r["custom_id"] for r in results) == sorted(f"task-{i}" for i in range(40))
    first = results[0]
    assert first["response"]["status_code"] == 200 and first["response"]["body"]["object"] == "chat.completion"
    assert first["error"] is None and first["response"]["request_id"]
    assert stack.get(f"{V1}/files/{done['error_file_id']}/content").content == b""  # always there, empty
    listed = stack.get(f"{V1}/batches?limit=1").json()
    assert listed["data"][0]["id"] == created["id"] and listed["object"] == "list"


def test_validation_errors_fail_the_job_with_their_line_numbers(stack):
    bad = lines(2) + b"{not json\n" + lines(1).replace(b"task-0", b"task-1")
    failed = wait(stack, submit(stack, bad)["id"])
    assert failed["status"] == "failed"
    codes = {(e["code"], e["line"]) for e in failed["errors"]["data"]}
    assert ("invalid_json_line", 3) in codes and ("duplicate_custom_id", 4) in codes
    not_batch = wait(stack, submit(stack, lines(1, deployment="gpt-4o"))["id"])
    assert not_batch["status"] == "failed" and not_batch["errors"]["data"][0]["code"] == "invalid_request"


def test_a_declared_fault_shows_up_as_that_lines_error(stack):
    faults = {"faults": [{"kind": "500", "share": 1}]}
    stack.patch("/++/config", json={"deployments": {"gpt-4o-batch": {**BATCH_DEPLOYMENT["gpt-4o-batch"], **faults}}})
    done = wait(stack, submit(stack, lines(3))["id"])
    assert done["status"] == "completed" and done["request_counts"]["failed"] == 3
    errors = content(stack, done["error_file_id"])
    assert {e["response"]["status_code"] for e in errors} == {500}


def test_the_enqueued_token_quota_fails_a_job_too_large(stack):
    tiny = {"gpt-4o-batch": {**BATCH_DEPLOYMENT["gpt-4o-batch"], "enqueuedTokens": 20}}
    stack.patch("/++/config", json={"deployments": tiny})
    failed = wait(stack, submit(stack, lines(10))["id"])
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["code"] == "token_limit_exceeded"


def test_cancel_and_fast_forward_past_the_window(stack_factory):
    stack = stack_factory({**FAST, "BATCH_LINE_SECONDS": "1"})
    stack.patch("/++/config", json={"deployments": BATCH_DEPLOYMENT})
    slow = submit(stack, lines(50))
    wait(stack, slow["id"], ("in_progress",))
    cancelled = stack.post(f"{V1}/batches/{slow['id']}/cancel").json()
    assert cancelled["status"] == "cancelling"
    done = wait(stack, slow["id"])
    assert done["status"] == "cancelled" and done["output_file_id"]
    again = stack.post(f"{V1}/batches/{slow['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    late = submit(stack, lines(50))
    wait(stack, late["id"], ("in_progress",))
    jobs = stack.get("/++/batches").json()
    assert [j["batch"]["id"] for j in jobs["jobs"]] == [late["id"]]
    r = stack.post(f"/++/batches/{late['id']}/fast-forward", json={"seconds": 86_400})
    assert r.status_code == 200, r.text
    assert wait(stack, late["id"])["status"] == "expired"


def test_metrics_count_jobs_lines_and_tokens(stack):
    wait(stack, submit(stack, lines(5))["id"])
    text = stack.get("/++/metrics").text
    assert 'aoai_batch_jobs{status="completed"} 1.0' in text
    assert 'aoai_batch_lines_total{deployment="gpt-4o-batch",outcome="completed"} 5.0' in text
    assert 'aoai_batch_tokens_total{deployment="gpt-4o-batch",kind="prompt"}' in text


def test_limits_show_what_the_data_folder_holds(stack):
    upload(stack, f"{V1}/files", {"purpose": "batch"}, lines(2))
    folder = stack.get("/++/limits").json()["stores"]["dataFolder"]
    assert (
        folder["count"] == 1 and folder["bytes"] > 0 and folder["settings"] == {"maxBytes": "SIMULATOR_DATA_MAX_BYTES"}
    )


def test_a_large_file_is_sent_from_disk_whole(stack):
    data = lines(1) * 30_000  # about 5 MB: sent in pieces, never held whole
    made = upload(stack, f"{V1}/files", {"purpose": "batch"}, data).json()
    r = stack.get(f"{V1}/files/{made['id']}/content")
    assert r.status_code == 200 and r.content == data


def test_responses_lines_of_an_older_dated_batch_are_asked_on_the_v1_path(stack):
    from aoai.stages.batches import _line_path

    assert _line_path({}, "/responses", "d", "2024-10-21") == "/openai/v1/responses"
    assert _line_path({}, "/responses", "d", "2025-04-01-preview") == "/openai/responses?api-version=2025-04-01-preview"
    assert _line_path({}, "/chat/completions", "d", "2024-10-21").startswith("/openai/deployments/d/chat/completions")
