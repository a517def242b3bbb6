"""Locust users for the simulator (or Azure OpenAI itself): chat, streamed chat and embeddings.

    pip install -r loadtest/requirements.txt
    LOADTEST_KEY=... locust -f loadtest/locustfile.py --host http://localhost:8000
    # without the web UI:  ... --headless -u 20 -r 5 -t 2m --csv loadtest-locust

Settings, from the environment:
    LOADTEST_KEY                    the api-key header value
    LOADTEST_MIX                    share of each kind (default chat=0.5,stream=0.3,embeddings=0.2)
    LOADTEST_DEPLOYMENTS            chat deployments, comma-separated (default gpt-4o)
    LOADTEST_EMBEDDING_DEPLOYMENTS  embedding deployments (default text-embedding-3-small)
    LOADTEST_MAX_TOKENS             max_tokens of chat requests (default 32)
    LOADTEST_API_VERSION            (default 2024-10-21)
    LOADTEST_MAX_BACKOFF            longest wait in seconds after a 429 (default 1)
    LOADTEST_URL                    the host when --host is not given (default http://localhost:8000)

Besides Locust's own rows for the requests (a streamed request's time there is the time to
its headers), two custom metrics appear in the statistics as request types, per deployment:
    TTFT  time from sending to the first SSE frame whose delta has non-empty content;
    ITL   each gap between two consecutive content frames.
Their counts are added into Locust's "Aggregated" row, so read request rates from the POST rows.
A 429 is a failure named "429 rate limited" (the Failures tab counts them); the 429 share over
the whole run is printed when the test stops, summed over the workers in distributed runs.
"""

from __future__ import annotations

import os
import random
import re
import time
from typing import ClassVar

import gevent
from locust import HttpUser, constant, events
from locust.runners import LocalRunner, MasterRunner

KINDS = ("chat", "stream", "embeddings")
# A content delta with at least one character: the value does not start with its closing quote.
CONTENT_FRAME = re.compile(rb'"content":\s*"(?!")')
PROMPTS = (
    "Summarise the main causes of the French Revolution.",
    "Write a haiku about load testing.",
    "Explain what a token bucket rate limiter does.",
    "List three uses of a message queue.",
)


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def parse_mix(text: str) -> dict[str, float]:
    """`chat=0.5,stream=0.3,embeddings=0.2` -> {kind: weight}; raises ValueError naming the problem."""
    weights = {}
    for part in _names(text):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in KINDS:
            raise ValueError(f"LOADTEST_MIX: expected kind=weight with kind one of {', '.join(KINDS)}, got {part!r}")
        weights[name.strip()] = float(value)
    if sum(weights.values()) <= 0 or min(weights.values()) < 0:
        raise ValueError("LOADTEST_MIX: weights must be 0 or more, at least one above 0")
    return weights


KEY = os.environ.get("LOADTEST_KEY", "")
MIX = parse_mix(os.environ.get("LOADTEST_MIX", "chat=0.5,stream=0.3,embeddings=0.2"))
DEPLOYMENTS = _names(os.environ.get("LOADTEST_DEPLOYMENTS", "")) or ["gpt-4o"]
EMBEDDING_DEPLOYMENTS = _names(os.environ.get("LOADTEST_EMBEDDING_DEPLOYMENTS", "")) or ["text-embedding-3-small"]
MAX_TOKENS = int(os.environ.get("LOADTEST_MAX_TOKENS", "32"))
API_VERSION = os.environ.get("LOADTEST_API_VERSION", "2024-10-21")
MAX_BACKOFF = float(os.environ.get("LOADTEST_MAX_BACKOFF", "1"))


class Tally:
    """Requests and 429s of this process since its last report to the master."""

    requests = 0
    throttled = 0


@events.report_to_master.add_listener
def _send_tally(client_id, data, **_):
    # Workers send what happened since the last report; the master adds it up.
    data["aoai_tally"] = (Tally.requests, Tally.throttled)
    Tally.requests = Tally.throttled = 0


@events.worker_report.add_listener
def _receive_tally(client_id, data, **_):
    requests, throttled = data.get("aoai_tally", (0, 0))
    Tally.requests += requests
    Tally.throttled += throttled


@events.test_start.add_listener
def _reset_tally(environment, **_):
    Tally.requests = Tally.throttled = 0


def _print_tally() -> None:
    share = Tally.throttled / Tally.requests if Tally.requests else 0.0
    print(f"Azure OpenAI load: {Tally.requests} requests, {Tally.throttled} answered 429 ({share:.1%})")


@events.test_stop.add_listener
def _print_tally_at_stop(environment, **_):
    if isinstance(environment.runner, LocalRunner):
        _print_tally()


@events.quitting.add_listener
def _print_tally_at_exit(environment, **_):
    # A master hears the workers' last reports only after the test stops, so it counts at exit.
    if isinstance(environment.runner, MasterRunner):
        _print_tally()


def _retry_after(headers) -> float:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) * scale)
        except (KeyError, TypeError, ValueError):
            continue
    return 1.0


class AzureOpenAIUser(HttpUser):
    """One client sending chat, streamed chat and embeddings requests back to back."""

    host = os.environ.get("LOADTEST_URL", "http://localhost:8000")
    wait_time = constant(0)  # as fast as answers come; the user count sets the load

    def on_start(self):
        self.client.headers.update({"api-key": KEY})

    def _metric(self, kind: str, deployment: str, ms: float) -> None:
        self.environment.events.request.fire(
            request_type=kind, name=deployment, response_time=ms, response_length=0, exception=None, context={}
        )

    def _finish(self, response) -> None:
        """Count the answer; mark 429s as named failures and back off as the answer says."""
        Tally.requests += 1
        if response.status_code == 429:
            Tally.throttled += 1
            response.failure("429 rate limited")
            gevent.sleep(min(_retry_after(response.headers), MAX_BACKOFF))
        elif response.status_code >= 400:
            response.failure(f"HTTP {response.status_code}")

    def _chat_body(self, stream: bool) -> dict:
        body = {"messages": [{"role": "user", "content": random.choice(PROMPTS)}], "max_tokens": MAX_TOKENS}
        if stream:
            body["stream"] = True
        return body

    def chat(self):
        deployment = random.choice(DEPLOYMENTS)
        with self.client.post(
            f"/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}",
            json=self._chat_body(False),
            name=f"chat {deployment}",
            catch_response=True,
            timeout=120,
        ) as response:
            self._finish(response)

    def stream(self):
        deployment = random.choice(DEPLOYMENTS)
        sent = time.perf_counter()
        with self.client.post(
            f"/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}",
            json=self._chat_body(True),
            name=f"stream {deployment}",
            stream=True,
            catch_response=True,
            timeout=120,
        ) as response:
            if response.status_code == 200:
                buffer, last = b"", None
                # chunk_size=None hands over each HTTP chunk as it arrives, so frames are timed
                # when they come, not when a buffer fills.
                for data in response.iter_content(chunk_size=None):
                    now = time.perf_counter()
                    *frames, buffer = (buffer + data.replace(b"\r\n", b"\n")).split(b"\n\n")
                    for frame in frames:
                        if not CONTENT_FRAME.search(frame):
                            continue
                        if last is None:
                            self._metric("TTFT", deployment, (now - sent) * 1000)
                        else:
                            self._metric("ITL", deployment, (now - last) * 1000)
                        last = now
                if last is None:
                    response.failure("stream without content")
            self._finish(response)

    def embeddings(self):
        deployment = random.choice(EMBEDDING_DEPLOYMENTS)
        with self.client.post(
            f"/openai/deployments/{deployment}/embeddings?api-version={API_VERSION}",
            json={"input": random.choice(PROMPTS)},
            name=f"embeddings {deployment}",
            catch_response=True,
            timeout=120,
        ) as response:
            self._finish(response)

    # Locust picks tasks in proportion to whole-number weights; the mix is given in shares.
    tasks: ClassVar = {
        fn: max(1, round(MIX[kind] * 100))
        for kind, fn in (("chat", chat), ("stream", stream), ("embeddings", embeddings))
        if MIX.get(kind, 0) > 0
    }
