"""Calls between workers, against real HTTP servers on the loopback: each worker's outcome,
what the calls carry, metrics merged across workers."""

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families
from unit_support import make_config

from aoai.runtime import peers

SECRET = "0123456789abcdef-secret"


class Worker(ThreadingHTTPServer):
    """A stand-in worker: answers each path as told, remembers every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.seen: list[dict] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)

    def requests_to(self, path: str) -> int:
        return sum(1 for r in self.seen if r["path"] == path)


class _Handler(BaseHTTPRequestHandler):
    server: Worker

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": self.rfile.read(length),
            }
        )
        status, body = self.server.answers.get(self.path.partition("?")[0], (404, b'{"error": {"message": "no"}}'))
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def running():
    one, two = Worker(), Worker()
    yield one, two
    one.close()
    two.close()


@pytest.fixture
def workers(running):
    """Two workers that answer (nothing told, nothing seen yet) and the address of one that
    is not there."""
    for worker in running:
        worker.answers.clear()
        worker.seen.clear()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nobody listens there
    yield *running, gone


# The pooled client the tests call through, as the simulator's services hold one.
LINK = peers.Link()


def config_for(*urls: str):
    return make_config(peers=tuple(urls), peer_secret=SECRET)


def run(coro):
    """Run a call on a fresh loop, the shared client closed after it, as the simulator does."""

    async def main():
        try:
            return await coro
        finally:
            await LINK.close()

    return asyncio.run(main())


def name(url: str) -> str:
    return url.removeprefix("http://")


# --- asking every worker -------------------------------------------------------------------------


def test_ask_all_gives_each_workers_outcome_by_its_address(workers):
    one, two, gone = workers
    one.answers["/++/config"] = (200, b'{"ok": true}')
    two.answers["/++/config"] = (400, b'{"error": {"code": "BadRequest", "message": "deployments.x: no such thing"}}')
    config = config_for(one.url, two.url, gone)
    outcomes = run(peers.ask_all(LINK, config, "PATCH", "/++/config", b'{"a": 1}'))
    assert set(outcomes) == {name(one.url), name(two.url), name(gone)}
    assert outcomes[name(one.url)] == peers.Outcome(200, "", b'{"ok": true}')
    assert outcomes[name(two.url)].status == 400
    assert outcomes[name(two.url)].message == "deployments.x: no such thing"
    assert outcomes[name(gone)].status is None and outcomes[name(gone)].message.startswith("ConnectError")


def test_a_call_to_a_worker_carries_the_key_and_the_launch_secret(workers):
    one, _, _ = workers
    one.answers["/++/config"] = (200, b"{}")
    config = config_for(one.url)
    run(peers.ask_all(LINK, config, "PATCH", "/++/config", b'{"a": 1}'))
    (request,) = one.seen
    assert (request["method"], request["path"], request["body"]) == ("PATCH", "/++/config", b'{"a": 1}')
    headers = request["headers"]
    assert headers[peers.PEER_HEADER] == SECRET and peers.from_peer(headers, SECRET)
    assert headers["api-key"] == config.api_key
    assert headers["content-type"] == "application/json"


def test_ask_all_can_ask_only_some_workers(workers):
    one, two, _ = workers
    outcomes = run(peers.ask_all(LINK, config_for(one.url, two.url), "POST", "/++/x", b"", peers=(two.url,)))
    assert list(outcomes) == [name(two.url)] and one.seen == [] and len(two.seen) == 1


def test_pass_on_gives_each_workers_status_or_what_went_wrong(workers):
    one, two, gone = workers
    one.answers["/++/save-recordings"] = (200, b'{"saved": 3}')
    two.answers["/++/save-recordings"] = (500, b"")
    said = run(peers.pass_on(LINK, config_for(one.url, two.url, gone), "POST", "/++/save-recordings", b""))
    assert said[name(one.url)] == 200 and said[name(two.url)] == 500
    assert isinstance(said[name(gone)], str) and said[name(gone)].startswith("ConnectError")


def test_an_azure_error_message_is_read_only_from_an_error_body():
    assert peers._error_message(b'{"error": {"message": "m"}}') == "m"
    assert peers._error_message(b'{"error": "flat"}') == ""
    assert peers._error_message(b"not json") == ""
    assert peers._error_message(b"[1, 2]") == ""


# --- metrics -------------------------------------------------------------------------------------

METRICS = """# HELP aoai_requests_total Requests.
# TYPE aoai_requests_total counter
aoai_requests_total{deployment="gpt-4o"} %d
"""


def test_scrape_collects_the_metrics_of_each_worker_that_gives_them(workers):
    one, two, gone = workers
    one.answers["/++/metrics"] = (200, (METRICS % 3).encode())
    two.answers["/++/metrics"] = (503, b"busy")
    texts = run(peers.scrape(LINK, config_for(one.url, two.url, gone)))
    assert texts == {name(one.url): METRICS % 3}
    assert one.seen[0]["headers"][peers.PEER_HEADER] == SECRET and "api-key" not in one.seen[0]["headers"]


def test_merged_metrics_label_every_sample_with_its_worker():
    merged = peers.merge_metrics({"w1:1": METRICS % 3, "w2:2": METRICS % 5}).decode()
    (family,) = [f for f in text_string_to_metric_families(merged) if f.name == "aoai_requests"]
    assert family.type == "counter" and family.documentation == "Requests."
    values = {s.labels["worker"]: s.value for s in family.samples if s.name == "aoai_requests_total"}
    assert values == {"w1:1": 3.0, "w2:2": 5.0}
    assert all(s.labels["deployment"] == "gpt-4o" for s in family.samples)
    assert merged.count("# TYPE aoai_requests_total counter") == 1  # one family, not one per worker


# --- the shared client ---------------------------------------------------------------------------


def test_the_client_is_shared_on_a_loop_and_made_anew_on_another():
    link = peers.Link()

    async def twice():
        return link.client(), link.client()

    async def once_and_close():
        client = link.client()
        await link.close()
        return client

    first, again = asyncio.run(twice())
    assert first is again
    other = asyncio.run(once_and_close())
    assert other is not first and other.is_closed and link._client is None


def test_address_is_host_and_port():
    assert peers.address("http://127.0.0.1:8001") == "127.0.0.1:8001"
    assert peers.address("https://w1.internal:443") == "w1.internal:443"


def test_workers_answer_json_the_way_the_tests_read_it(workers):
    # The stand-in itself: an unknown path is a 404 with an Azure-shaped body.
    one, _, _ = workers
    outcome = run(peers.ask_all(LINK, config_for(one.url), "GET", "/nothing", b""))[name(one.url)]
    assert outcome.status == 404 and json.loads(outcome.body) == {"error": {"message": "no"}}
