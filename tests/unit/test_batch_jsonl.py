import io
import json
import time
import tracemalloc
from typing import Any

import pytest

from aoai.batch import jsonl
from aoai.batch.jsonl import BatchDeployment, Limits, endpoint_of, read_lines, validate


def words(endpoint: str, body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body["messages"])


DEPLOYMENTS = {
    "gpt-4o-batch": BatchDeployment("gpt-4o-batch", True, "gpt-4o", words),
    "other-batch": BatchDeployment("other-batch", True, "gpt-4o-mini", words),
    "gpt-4o": BatchDeployment("gpt-4o", False, "gpt-4o", words),
}


def lookup(name: str) -> BatchDeployment | None:
    return DEPLOYMENTS.get(name)


def line(i: int = 0, **changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "custom_id": f"task-{i}",
        "method": "POST",
        "url": "/chat/completions",
        "body": {"model": "gpt-4o-batch", "messages": [{"role": "user", "content": "one two three"}]},
    }
    request.update(changes)
    return request


def jsonl_file(*lines: Any) -> io.BytesIO:
    return io.BytesIO(b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n" for x in lines))


def check(*lines: Any, endpoint: str = "/chat/completions", limits: Limits = jsonl.AZURE) -> jsonl.Validation:
    return validate(jsonl_file(*lines), endpoint, lookup, limits)


def codes(result: jsonl.Validation) -> list[tuple[str, int | None]]:
    return [(e["code"], e["line"]) for e in result.errors]


def test_a_valid_file_counts_requests_tokens_and_offsets():
    result = check(line(0), line(1), line(2))
    assert result.ok and result.errors_object() is None
    assert result.lines == 3
    assert result.deployment is DEPLOYMENTS["gpt-4o-batch"]
    assert result.tokens == 9
    data = jsonl_file(line(0), line(1), line(2)).getvalue()
    assert list(result.offsets) == [0, data.index(b"\n") + 1, data.index(b"\n", data.index(b"\n") + 1) + 1]
    assert list(result.numbers) == [1, 2, 3]


def test_the_v1_spelling_matches_the_dated_one_both_ways():
    assert check(line(0, url="/v1/chat/completions"), line(1)).ok
    assert check(line(0), endpoint="/v1/chat/completions").ok
    assert endpoint_of("/v1/responses") == "/responses"
    assert endpoint_of("/v1/files") is None and endpoint_of(None) is None


def test_blank_lines_are_not_requests_but_count_as_lines():
    result = check(line(0), b"\n", b"   \r\n", line(1), b"\n")
    assert result.ok and result.lines == 2
    assert list(result.numbers) == [1, 4]


def test_malformed_json_names_its_1_based_line():
    result = check(line(0), b'{"custom_id": "x",\n', line(2))
    assert codes(result) == [("invalid_json_line", 2)]
    assert result.errors[0] == {
        "code": "invalid_json_line",
        "message": jsonl.INVALID_JSON_LINE,
        "line": 2,
        "param": None,
    }
    assert result.errors_object() == {"object": "list", "data": result.errors}


def test_invalid_utf8_is_an_invalid_json_line():
    assert codes(check(line(0), b'{"custom_id": "\xff"}\n')) == [("invalid_json_line", 2)]


def test_a_bom_gets_azures_generic_message():
    data = jsonl.BOM + json.dumps(line(0)).encode() + b"\n"
    result = validate(io.BytesIO(data), "/chat/completions", lookup)
    assert codes(result) == [("invalid_json_line", None)]
    assert result.errors[0]["message"].startswith(
        "Validation failed: A valid model deployment name couldn't be extracted from the input file."
    )


@pytest.mark.parametrize(
    ("request_line", "param"),
    [
        (b"[1, 2]\n", None),
        (line(0, custom_id=None), "custom_id"),
        (line(0, custom_id="  "), "custom_id"),
        (line(0, custom_id=7), "custom_id"),
        (line(0, method="GET"), "method"),
        (line(0, url=None), "url"),
        (line(0, body=None), "body"),
        (line(0, body="text"), "body"),
    ],
)
def test_line_schema_errors_are_invalid_request(request_line, param):
    line_1 = line(1)
    result = check(line_1, request_line)
    assert codes(result) == [("invalid_request", 2)]
    assert result.errors[0]["param"] == param
    assert result.errors[0]["message"].startswith(jsonl.INVALID_REQUEST)


def test_missing_custom_id_key():
    request = line(0)
    del request["custom_id"]
    assert codes(check(request)) == [("invalid_request", 1)]


def test_a_deployment_of_another_sku_is_invalid_request_once():
    other = {"model": "gpt-4o", "messages": []}
    result = check(line(0, body=other), line(1, body=other))
    assert codes(result) == [("invalid_request", 1)]
    assert "globalbatch" in result.errors[0]["message"]
    assert result.deployment is None


def test_duplicate_custom_id():
    assert codes(check(line(0), line(1), line(0))) == [("duplicate_custom_id", 3)]


def test_url_mismatch_against_the_batch_endpoint():
    assert codes(check(line(0), line(1, url="/embeddings"))) == [("url_mismatch", 2)]
    assert codes(check(line(0), endpoint="/responses")) == [("url_mismatch", 1)]
    assert codes(check(line(0, url="/v1/chat/completion"))) == [("url_mismatch", 1)]


def test_model_not_found_is_reported_once():
    missing = {"model": "nope", "messages": []}
    result = check(line(0, body=missing), line(1, body=missing), line(2))
    assert codes(result) == [("model_not_found", 1), ("model_mismatch", 3)]
    assert result.errors[0]["param"] == "body.model"
    assert codes(check(line(0, body={"messages": []}))) == [("model_not_found", 1)]


def test_model_mismatch():
    other = {"model": "other-batch", "messages": []}
    result = check(line(0), line(1, body=other), line(2))
    assert codes(result) == [("model_mismatch", 2)]
    assert result.deployment is DEPLOYMENTS["gpt-4o-batch"]


def test_empty_file_and_empty_batch():
    assert codes(check()) == [("empty_file", None)]
    assert check().errors[0]["message"] == jsonl.EMPTY_FILE
    assert codes(check(b"\n\n  \n")) == [("empty_batch", None)]


def test_errors_kept_are_bounded_and_the_rest_counted():
    bad = [b"not json\n"] * 30
    result = check(*bad, limits=Limits(max_errors=5))
    assert len(result.errors) == 5 and result.more_errors == 25
    assert result.lines == 30


def test_tokens_are_not_counted_after_an_error_and_a_bad_body_falls_back():
    assert check(b"nope\n", line(1)).tokens == 0
    odd = {"model": "gpt-4o-batch", "messages": "not a list"}
    result = check(line(0, body=odd))
    assert result.ok and result.tokens > 0


def test_an_over_long_line_is_one_line_and_reading_goes_on():
    limits = Limits(max_line_bytes=1000)
    huge = line(1, body={"model": "gpt-4o-batch", "messages": [{"role": "user", "content": "x" * 5000}]})
    result = check(line(0), huge, b"garbage\n", limits=limits)
    assert codes(result) == [("invalid_request", 2), ("invalid_json_line", 3)]
    assert "larger than 1,000 bytes" in result.errors[0]["message"]
    assert result.lines == 3


def test_a_line_at_the_limit_passes():
    raw = json.dumps(line(0)).encode()
    assert check(raw + b"\n", limits=Limits(max_line_bytes=len(raw))).ok
    assert check(raw, limits=Limits(max_line_bytes=len(raw))).ok  # no final newline


def test_deeply_nested_line_is_refused():
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    result = check(line(0, body={"model": "gpt-4o-batch", "messages": [], "deep": deep}))
    assert codes(result) == [("invalid_request", 1)]


def test_a_file_over_the_byte_limit_stops():
    result = check(*(line(i) for i in range(50)), limits=Limits(max_bytes=1000))
    assert codes(result) == [("invalid_request", None)]
    assert "1,000 bytes" in result.errors[0]["message"]


def test_a_10_mib_line_is_one_line():
    content = "word " * (2 * 1024 * 1024 - 40)
    big = line(0, body={"model": "gpt-4o-batch", "messages": [{"role": "user", "content": content}]})
    raw = json.dumps(big).encode() + b"\n"
    assert 9 * jsonl.MiB < len(raw) <= 10 * jsonl.MiB
    result = validate(io.BytesIO(raw + json.dumps(line(1)).encode()), "/chat/completions", lookup)
    assert result.ok and result.lines == 2


def many(count: int) -> bytes:
    body = json.dumps({"model": "gpt-4o-batch", "messages": [{"role": "user", "content": "one two three"}]})
    return "".join(
        f'{{"custom_id":"task-{i}","method":"POST","url":"/chat/completions","body":{body}}}\n' for i in range(count)
    ).encode()


def test_100001_lines_are_too_many():
    result = validate(io.BytesIO(many(100_001)), "/chat/completions", lookup)
    assert codes(result) == [("too_many_tasks", 100_001)]
    assert "100,000" in result.errors[0]["message"]


def test_100000_lines_pass():
    result = validate(io.BytesIO(many(100_000)), "/chat/completions", lookup)
    assert result.ok and result.lines == 100_000 and result.tokens == 300_000


def test_50000_lines_validate_quickly_in_bounded_memory(tmp_path):
    path = tmp_path / "input.jsonl"
    padding = "p" * 1500  # about 1.6 kB a line: an 80 MB file
    with path.open("wb") as out:
        for i in range(50_000):
            request = line(i)
            request["body"]["padding"] = padding
            out.write(json.dumps(request).encode() + b"\n")
    size = path.stat().st_size
    tracemalloc.start()
    began = time.perf_counter()
    with path.open("rb") as file:
        result = validate(file, "/chat/completions", lookup)
    took = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.ok and result.lines == 50_000
    assert took < 30
    assert peak < size / 8, (peak, size)


def test_read_lines_from_the_start_and_from_an_offset():
    data = jsonl_file(line(0), b"\n", line(1), line(2))
    lines = list(read_lines(data))
    assert [x.number for x in lines] == [1, 3, 4]
    assert [x.request["custom_id"] for x in lines] == ["task-0", "task-1", "task-2"]
    assert lines[1].offset == lines[0].end + 1
    resumed = list(read_lines(data, start_line=lines[1].number, offset=lines[1].offset))
    assert resumed == lines[1:]
    scanned = list(read_lines(data, start_line=4))
    assert scanned == lines[2:]
    validation = validate(jsonl_file(line(0), b"\n", line(1), line(2)), "/chat/completions", lookup)
    assert list(validation.offsets) == [x.offset for x in lines]


def test_read_lines_raises_on_a_changed_file():
    with pytest.raises(ValueError):
        list(read_lines(jsonl_file(line(0), b"oops\n")))
