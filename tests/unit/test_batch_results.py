import re

import pytest

from aoai.batch import results
from aoai.batch.results import (
    WrongMove,
    cancel,
    check_create,
    counts,
    new_batch,
    to_cancelled,
    to_cancelling,
    to_completed,
    to_expired,
    to_failed,
    to_finalizing,
    to_in_progress,
)
from aoai.openai.validation import Invalid

T = 1_725_419_394


def batch(**changes):
    made = new_batch("batch_1", "file-abc", "/chat/completions", "24h", None, None, T)
    made.update(changes)
    return made


def test_a_new_batch_has_every_field_of_azures_object():
    made = batch()
    assert list(made) == [
        "id",
        "object",
        "endpoint",
        "errors",
        "input_file_id",
        "completion_window",
        "status",
        "output_file_id",
        "error_file_id",
        "created_at",
        "in_progress_at",
        "expires_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "request_counts",
        "metadata",
    ]
    assert made["object"] == "batch" and made["status"] == "validating"
    assert made["expires_at"] == T + 86_400
    assert made["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert "output_expires_after" not in made


def test_output_expiry_is_kept_and_applies_to_output_files():
    made = new_batch("b", "f", "/v1/responses", "24h", {"a": "b"}, {"seconds": 1_209_600, "anchor": "created_at"}, T)
    assert made["metadata"] == {"a": "b"}
    assert results.output_file_expires_at(made, T + 5) == T + 5 + 1_209_600
    assert results.output_file_expires_at(batch(), T) is None


def test_ids():
    assert re.fullmatch(r"batch_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", results.new_batch_id())
    assert re.fullmatch(r"batch_req_[0-9a-f]{32}", results.new_request_line_id())


def test_the_happy_path_sets_each_timestamp_and_never_changes_the_old_dict():
    start = batch()
    running = to_in_progress(start, T + 10, 3)
    assert start["status"] == "validating" and start["in_progress_at"] is None
    assert running["status"] == "in_progress" and running["in_progress_at"] == T + 10
    assert running["request_counts"] == counts(3)
    finishing = to_finalizing(running, T + 20, counts(3, 2, 1))
    assert finishing["finalizing_at"] == T + 20 and finishing["request_counts"] == counts(3, 2, 1)
    done = to_completed(finishing, T + 30, "file-out", "file-err", counts(3, 2, 1))
    assert done["status"] == "completed" and done["completed_at"] == T + 30
    assert done["output_file_id"] == "file-out" and done["error_file_id"] == "file-err"
    assert results.is_terminal(done) and not results.is_terminal(finishing)


def test_failed_keeps_the_errors_as_azures_list():
    errors = [{"code": "invalid_json_line", "message": "m", "line": 2, "param": None}]
    failed = to_failed(batch(), T + 1, errors)
    assert failed["status"] == "failed" and failed["failed_at"] == T + 1
    assert failed["errors"] == {"object": "list", "data": errors}


def test_cancel_then_cancelled_keeps_partial_outputs():
    running = to_in_progress(batch(), T + 1, 10)
    cancelling = cancel(running, T + 2)
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] == T + 2
    assert cancel(cancelling, T + 3) is cancelling
    cancelled = to_cancelled(cancelling, T + 4, "file-out", "file-err", counts(10, 4, 0))
    assert cancelled["cancelled_at"] == T + 4 and cancelled["request_counts"] == counts(10, 4, 0)
    assert cancel(cancelled, T + 5) is cancelled
    assert cancel(batch(), T)["status"] == "cancelling"


@pytest.mark.parametrize("status", ["completed", "failed", "expired"])
def test_cancel_of_a_finished_batch_is_a_409(status):
    with pytest.raises(WrongMove) as refused:
        cancel(batch(status=status), T)
    assert refused.value.status == 409
    assert refused.value.message == f"Cannot cancel a batch with status '{status}'."
    assert isinstance(refused.value, Invalid)


def test_expired_only_from_in_progress():
    expired = to_expired(to_in_progress(batch(), T, 2), T + 86_400, "file-out", None)
    assert expired["status"] == "expired" and expired["expired_at"] == T + 86_400
    with pytest.raises(WrongMove):
        to_expired(batch(), T)


@pytest.mark.parametrize(
    ("move", "status"),
    [
        (lambda b: to_in_progress(b, T, 1), "in_progress"),
        (lambda b: to_finalizing(b, T), "validating"),
        (lambda b: to_completed(b, T, "o", "e", counts()), "in_progress"),
        (lambda b: to_failed(b, T, []), "completed"),
        (lambda b: to_cancelling(b, T), "cancelled"),
        (lambda b: to_cancelled(b, T), "in_progress"),
    ],
)
def test_moves_azure_does_not_make_are_refused(move, status):
    with pytest.raises(WrongMove, match=f"status '{status}'"):
        move(batch(status=status))


def body(**changes):
    made = {"input_file_id": "file-abc", "endpoint": "/chat/completions", "completion_window": "24h"}
    made.update(changes)
    return {k: v for k, v in made.items() if v is not None}


def refusal(value):
    with pytest.raises(Invalid) as refused:
        check_create(value)
    assert refused.value.status == 400
    return refused.value


def test_a_good_create_body():
    made = check_create(body(metadata={"k": "v"}, output_expires_after={"seconds": 1_209_600, "anchor": "created_at"}))
    assert made == results.CreateBatch(
        "file-abc", "/chat/completions", "24h", {"k": "v"}, {"seconds": 1_209_600, "anchor": "created_at"}
    )
    for endpoint in ("/v1/chat/completions", "/embeddings", "/v1/embeddings", "/responses", "/v1/responses"):
        assert check_create(body(endpoint=endpoint)).endpoint == endpoint


def test_create_requires_its_fields():
    assert refusal(body(input_file_id=None)).param == "input_file_id"
    assert refusal(body(input_file_id=None)).code == "missing_required_parameter"
    assert refusal(body(endpoint=None)).param == "endpoint"
    assert refusal(body(completion_window=None)).param == "completion_window"
    assert refusal([1]).code == "invalid_type"


def test_endpoint_and_window_values():
    wrong = refusal(body(endpoint="/completions"))
    assert wrong.code == "invalid_value" and wrong.param == "endpoint"
    assert wrong.message.startswith("Invalid value: '/completions'. Supported values are: '/chat/completions'")
    window = refusal(body(completion_window="48h"))
    assert window.message == "Invalid value: '48h'. Supported values are: '24h'."
    assert window.param == "completion_window"


def test_metadata_bounds():
    assert check_create(body(metadata={f"k{i}": "v" for i in range(16)})).metadata is not None
    assert refusal(body(metadata={f"k{i}": "v" for i in range(17)})).code == "object_above_max_properties"
    assert check_create(body(metadata={"k" * 64: "v" * 512})).metadata
    assert refusal(body(metadata={"k" * 65: "v"})).code == "string_above_max_length"
    long_value = refusal(body(metadata={"k": "v" * 513}))
    assert long_value.code == "string_above_max_length" and long_value.param == "metadata.k"
    assert refusal(body(metadata={"k": 1})).code == "invalid_type"
    assert refusal(body(metadata="x")).code == "invalid_type"


def test_output_expires_after():
    low = refusal(body(output_expires_after={"seconds": 60, "anchor": "created_at"}))
    assert low.code == "integer_below_min_value" and low.param == "output_expires_after.seconds"
    assert refusal(body(output_expires_after={"seconds": 2_592_001})).code == "integer_above_max_value"
    assert refusal(body(output_expires_after={"seconds": "1209600"})).code == "invalid_type"
    assert refusal(body(output_expires_after={"seconds": True})).code == "invalid_type"
    assert refusal(body(output_expires_after={"anchor": "created_at"})).code == "missing_required_parameter"
    assert refusal(body(output_expires_after={"seconds": 1_209_600, "anchor": "now"})).param == (
        "output_expires_after.anchor"
    )
    # Azure's REST page puts the anchor at the top level.
    top = check_create(body(output_expires_after={"seconds": 2_592_000}, anchor="created_at"))
    assert top.output_expires_after == {"seconds": 2_592_000, "anchor": "created_at"}
    assert refusal(body(output_expires_after={"seconds": 2_592_000}, anchor="later")).code == "invalid_value"


def test_result_lines():
    ok = results.result_line("task-0", 200, "req-1", {"id": "chatcmpl-1"})
    assert re.fullmatch(r"batch_req_[0-9a-f]{32}", ok["id"])
    assert ok["custom_id"] == "task-0" and ok["error"] is None
    assert ok["response"] == {"status_code": 200, "request_id": "req-1", "body": {"id": "chatcmpl-1"}}
    assert not results.goes_to_error_file(ok)
    failed = results.result_line("task-1", 400, "req-2", {"error": {"code": "content_filter", "message": "m"}})
    assert failed["error"] is None and failed["response"]["status_code"] == 400
    assert results.goes_to_error_file(failed)
    never = results.unanswered_line("task-2", *results.BATCH_EXPIRED)
    assert never["response"] is None and never["error"]["code"] == "batch_expired"
    assert results.goes_to_error_file(never)


def test_token_limit_exceeded_names_the_deployment_and_limit():
    entry = results.token_limit_exceeded("gpt-4o-batch", 200_000_000, 199_999_000, 5_000)
    assert entry["code"] == "token_limit_exceeded" and entry["line"] is None and entry["param"] is None
    assert entry["message"].startswith("Enqueued token limit reached for gpt-4o-batch. Limit: 200,000,000 enqueued")
    assert "5,000" in entry["message"]
