"""The fault stages on mitmproxy's test flows: which requests they answer and how, record
mode left alone, waits reshaped before pacing, and the quota the Limits stage sees."""

from __future__ import annotations

import time

from mitmproxy.test import taddons, tutils
from unit_support import chat_path, json_of, make_config, make_flow, run

from aoai.runtime import latency
from aoai.runtime.config import faults_of
from aoai.runtime.fault_book import FaultBook
from aoai.runtime.state import context_of
from aoai.stages.faults import Faults, FaultTiming
from aoai.stages.ratelimit import Limits


def declared(config, deployment: str, *specs) -> None:
    config.deployments[deployment].faults = faults_of(list(specs), "faults")


def admitted(config, deployment: str = "gpt-4o", body: dict | None = None):
    """A chat request as it leaves the Limits stage: routed, checked and admitted."""
    body = body or {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    flow = make_flow(path=chat_path(deployment), body=body)
    context = context_of(flow)
    context.config, context.deployment, context.body, context.prompt_tokens = (
        config,
        config.deployments[deployment],
        body,
        8,
    )
    return flow


def test_nothing_declared_changes_nothing():
    config = make_config()
    book = FaultBook()
    flow = admitted(config)
    assert Faults(config, book).request(flow) is None
    assert flow.response is None and context_of(flow).fault_shapes == ()


def test_a_503_answers_with_retry_after_and_is_counted():
    config = make_config()
    book = FaultBook()
    declared(config, "gpt-4o", {"kind": "503", "share": 1, "retryAfter": 4})
    flow = admitted(config)
    with taddons.context(Faults(config, book)):
        Faults(config, book).request(flow)
    assert flow.response.status_code == 503 and flow.response.headers["retry-after"] == "4"
    assert json_of(flow.response)["error"]["code"] == "ServiceUnavailable"
    assert book.injected[("gpt-4o", "503")] == 1


def test_the_default_covers_deployments_without_their_own():
    config = make_config()
    book = FaultBook()
    config.default_faults = faults_of([{"kind": "500", "share": 1}], "faults")
    flow = admitted(config, "gpt-4o-mini")
    Faults(config, book).request(flow)
    assert flow.response.status_code == 500
    assert json_of(flow.response)["error"]["type"] == "server_error"


def test_record_mode_is_left_to_azure():
    config = make_config(mode="record")
    book = FaultBook()
    declared(config, "gpt-4o", {"kind": "500", "share": 1})
    flow = admitted(config)
    Faults(config, book).request(flow)
    assert flow.response is None and not book.injected


def test_a_timeout_is_held_until_its_delay():
    config = make_config()
    book = FaultBook()
    declared(config, "gpt-4o", {"kind": "timeout", "share": 1, "status": 504, "afterMs": 700})
    flow = admitted(config)
    Faults(config, book).request(flow)
    assert flow.response.status_code == 504
    assert context_of(flow).hold.seconds == 0.7  # the Pacing stage sends it then


def test_a_hang_whose_client_left_ends_the_flow():
    config = make_config()
    book = FaultBook()
    declared(config, "gpt-4o", {"kind": "hang", "share": 1, "maxS": 30})
    flow = admitted(config)
    flow.client_conn.state = type(flow.client_conn.state)(0)  # the client closed its connection

    async def main():
        started = time.monotonic()
        await Faults(config, book).request(flow)
        return time.monotonic() - started

    assert run(main()) < 1
    assert flow.error is not None and flow.response is not None  # killed; later stages step aside
    assert book.hanging == 0


def test_a_hang_answers_408_after_max_s():
    config = make_config()
    book = FaultBook()
    declared(config, "gpt-4o", {"kind": "hang", "share": 1, "maxS": 0.3})
    flow = admitted(config)
    flow.request.timestamp_start = time.time()
    run(Faults(config, book).request(flow))
    assert flow.response.status_code == 408 and flow.error is None


def test_shapes_wait_for_the_timing_stage():
    config = make_config()
    book = FaultBook()
    declared(
        config, "gpt-4o", {"kind": "slowFirstByte", "share": 1, "ms": 500}, {"kind": "trickle", "share": 1, "factor": 3}
    )
    flow = admitted(config)
    Faults(config, book).request(flow)
    assert flow.response is None
    assert [f.kind for f in context_of(flow).fault_shapes] == ["slowFirstByte", "trickle"]
    # The generator answered, held 1 s; the timing stage reshapes the hold before pacing.
    flow.response = tutils.tresp()
    latency.hold(context_of(flow), 1.0)
    FaultTiming(config, book).response(flow)
    assert context_of(flow).hold.seconds == 3.5
    assert book.injected[("gpt-4o", "trickle")] == 1
    assert book.injected[("gpt-4o", "slowFirstByte")] == 1


def test_a_context_length_fault_is_azures_400():
    config = make_config()
    book = FaultBook()
    declared(config, "gpt-4o", {"kind": "contextLength", "share": 1})
    flow = admitted(config)
    Faults(config, book).request(flow)
    error = json_of(flow.response)["error"]
    assert flow.response.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["message"].startswith(
        "This model's maximum context length is 128000 tokens. However, you "
        "requested 128013 tokens (128008 in the messages, 5 in the completion)."
    )


def test_the_limits_stage_sees_a_quota_cut_and_record_mode_does_not():
    config = make_config()
    book = FaultBook()
    deployment = config.deployments["gpt-4o"]
    deployment.tokens_per_minute = 60000
    declared(config, "gpt-4o", {"kind": "quotaCut", "everyS": 3600, "tokensPerMinute": 600, "forS": 60})
    limits = Limits(config, faults=book)
    quota = limits.quota_now(deployment)
    assert quota.tokens == 600
    assert quota.requests == 60  # the request quota the normal 60,000 TPM gives (360 RPM, 60 per 10 s)
    config.mode = "record"
    assert limits.quota_now(deployment).tokens == 60000
