#!/usr/bin/env python3
"""A small load driver for CI: chat, streamed chat and embeddings against an Azure OpenAI
endpoint (the simulator, or Azure itself) for a fixed time, then a report.

    python loadtest/driver.py --url http://localhost:8000 --key KEY --duration 30 \
        --concurrency 8 --mix chat=0.5,stream=0.3,embeddings=0.2 --deployment gpt-4o

Each of --concurrency workers keeps one keep-alive connection and sends one request after
another until --duration runs out (requests under way then are let finish, within
--timeout). After a 429 a worker waits as retry-after-ms says, at most --max-backoff
seconds, as a polite client would, so a throttled run does not turn into a 429 storm.

Measured, from writing the request:
* TTFT (streamed chat): until the first SSE frame whose delta has non-empty content, the
  definition load-test tools for LLM serving use (the role frame and the prompt-filter frame
  carry no content and do not count);
* ITL (streamed chat): each gap between two consecutive content frames;
* request time per kind: until the whole answer is read.

The report goes to stdout and to PREFIX.txt, the figures to PREFIX.json, and a chart to
PREFIX.png (TTFT and ITL histograms against the expected values, requests per second over
time with the 429s). The expected TTFT and ITL are --expected-ttft-ms/--expected-itl-ms, or
else the first chat deployment's latency as the simulator's GET /++/config describes it (its own, the
LATENCY_OPENAI_CHAT_COMPLETIONS_* setting, or its model's defaults).

The driver shares the machine with what it measures, so it stays cheap: asyncio streams, a
hand-written HTTP/1.1 request, and a byte scan of SSE frames instead of JSON parsing. Only
matplotlib (for the chart) is needed beyond the standard library.

Exit status: 0 when at least one request succeeded, 1 when none did, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import re
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

API_VERSION = "2024-10-21"
KINDS = ("chat", "stream", "embeddings")
# A content delta with at least one character: the value does not start with its closing quote.
CONTENT_FRAME = re.compile(rb'"content":\s*"(?!")')
PROMPTS = (
    "Summarise the main causes of the French Revolution.",
    "Write a haiku about load testing.",
    "Explain what a token bucket rate limiter does.",
    "List three uses of a message queue.",
)


class ArgumentError(Exception):
    pass


# --- Arguments --------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """`chat=0.5,stream=0.3,embeddings=0.2` -> weights normalised to sum 1."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in KINDS:
            raise ArgumentError(f"--mix: expected kind=weight with kind one of {', '.join(KINDS)}, got {part!r}")
        try:
            weight = float(value)
        except ValueError:
            raise ArgumentError(f"--mix: {name}: expected a number, got {value!r}") from None
        if weight < 0 or not math.isfinite(weight):
            raise ArgumentError(f"--mix: {name}: the weight must be 0 or more")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ArgumentError("--mix: at least one weight must be above 0")
    return {k: weights.get(k, 0.0) / total for k in KINDS}


def names(values: list[str]) -> list[str]:
    """Repeated and comma-separated names, in order, without blanks."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default="http://localhost:8000", help="endpoint base URL (default: %(default)s)")
    p.add_argument(
        "--key",
        default="",
        help="the api-key header value (default: LOADTEST_KEY, SIMULATOR_API_KEY, or that in ./.env)",
    )
    p.add_argument("--duration", type=float, default=30.0, help="seconds to send requests (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, help="workers, one connection each (default: %(default)s)")
    p.add_argument(
        "--mix", default="chat=0.5,stream=0.3,embeddings=0.2", help="share of each request kind (default: %(default)s)"
    )
    p.add_argument(
        "--deployment",
        action="append",
        default=[],
        help="chat deployment names, comma-separated or repeated (default: gpt-4o)",
    )
    p.add_argument(
        "--embedding-deployment",
        action="append",
        default=[],
        help="embedding deployment names (default: text-embedding-3-small)",
    )
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of chat requests (default: %(default)s)")
    p.add_argument("--api-version", default=API_VERSION, help="(default: %(default)s)")
    p.add_argument("--expected-ttft-ms", type=float, help="configured time to first token")
    p.add_argument("--expected-itl-ms", type=float, help="configured inter-token latency")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take (default: %(default)s)")
    p.add_argument(
        "--max-backoff", type=float, default=1.0, help="longest wait in seconds after a 429 (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, help="makes the sequence of request kinds reproducible")
    p.add_argument(
        "--out",
        default="bench-results/loadtest",
        help="report path prefix: PREFIX.txt, PREFIX.json, PREFIX.png (default: %(default)s)",
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG (no matplotlib needed)")
    return p


def default_key() -> str:
    """LOADTEST_KEY or SIMULATOR_API_KEY from the environment, else SIMULATOR_API_KEY from ./.env
    (where `make run` reads it), so a local run needs no --key."""
    for name in ("LOADTEST_KEY", "SIMULATOR_API_KEY"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        lines = Path(".env").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name.strip() == "SIMULATOR_API_KEY":
            return value.strip().strip("'\"")
    return ""


@dataclass
class Settings:
    url: str
    key: str
    duration: float
    concurrency: int
    mix: dict[str, float]
    deployments: list[str]
    embedding_deployments: list[str]
    max_tokens: int
    api_version: str
    expected_ttft_ms: float | None
    expected_itl_ms: float | None
    timeout: float
    max_backoff: float
    seed: int | None
    out: str
    chart: bool

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> Settings:
        a = build_parser().parse_args(argv)
        if a.duration <= 0 or a.concurrency < 1 or a.max_tokens < 1 or a.timeout <= 0 or a.max_backoff < 0:
            raise ArgumentError(
                "--duration, --timeout must be above 0; --concurrency, --max-tokens at least 1; --max-backoff 0 or more"
            )
        parts = urlsplit(a.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ArgumentError(f"--url: expected http://host[:port] or https://…, got {a.url!r}")
        return cls(
            url=a.url.rstrip("/"),
            key=a.key or default_key(),
            duration=a.duration,
            concurrency=a.concurrency,
            mix=parse_mix(a.mix),
            deployments=names(a.deployment) or ["gpt-4o"],
            embedding_deployments=names(a.embedding_deployment) or ["text-embedding-3-small"],
            max_tokens=a.max_tokens,
            api_version=a.api_version,
            expected_ttft_ms=a.expected_ttft_ms,
            expected_itl_ms=a.expected_itl_ms,
            timeout=a.timeout,
            max_backoff=a.max_backoff,
            seed=a.seed,
            out=a.out,
            chart=not a.no_chart,
        )


# --- A minimal HTTP/1.1 client ----------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened after an error or a `connection: close`."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.base_path = parts.path.rstrip("/")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        context = ssl.create_default_context() if self.tls else None
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=context)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b"", on_chunk=None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; return status, headers (lower-case names) and body.

        With `on_chunk`, each piece of the body is handed over as it arrives (and not kept)."""
        if self.writer is None or self.writer.is_closing():
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = [
            f"{method} {self.base_path}{path} HTTP/1.1",
            f"host: {self.host_header}",
            f"content-length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        reader = self.reader
        status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        response_headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                response_headers[name.strip().lower()] = value.strip()
        kept: list[bytes] = []
        deliver = on_chunk or kept.append
        if "chunked" in response_headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                        pass
                    break
                deliver((await reader.readexactly(size + 2))[:-2])
        elif "content-length" in response_headers:
            length = int(response_headers["content-length"])
            if length:
                deliver(await reader.readexactly(length))
        else:  # the body ends when the server closes the connection
            while chunk := await reader.read(65536):
                deliver(chunk)
            self.close()
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return status, response_headers, b"".join(kept)


# --- The load ---------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    deployment: str
    start: float  # seconds since the run started
    end: float
    status: int  # 0: no HTTP answer (connection error or timeout)
    ttft_ms: float | None = None
    itls_ms: list[float] = field(default_factory=list)
    error: str = ""


class Stream:
    """Scans SSE bytes as they arrive and notes when each content frame came."""

    def __init__(self, sent: float):
        self.sent = sent
        self.buffer = b""
        self.content_times: list[float] = []

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data.replace(b"\r\n", b"\n")  # SSE allows CRLF line ends too
        *events, self.buffer = self.buffer.split(b"\n\n")
        for event in events:
            if CONTENT_FRAME.search(event):
                self.content_times.append(now)

    @property
    def ttft_ms(self) -> float | None:
        return (self.content_times[0] - self.sent) * 1000 if self.content_times else None

    @property
    def itls_ms(self) -> list[float]:
        t = self.content_times
        return [(b - a) * 1000 for a, b in itertools.pairwise(t)]


def retry_after_seconds(headers: dict[str, str]) -> float:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) * scale)
        except (KeyError, ValueError):
            continue
    return 1.0


class Load:
    def __init__(self, settings: Settings):
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.results: list[Result] = []
        self.t0 = 0.0
        self.headers = {"api-key": settings.key, "content-type": "application/json"}

    def _request(self, kind: str) -> tuple[str, str, bytes]:
        s = self.s
        prompt = self.rng.choice(PROMPTS)
        if kind == "embeddings":
            deployment = self.rng.choice(s.embedding_deployments)
            path = f"/openai/deployments/{deployment}/embeddings?api-version={s.api_version}"
            return deployment, path, json.dumps({"input": prompt}).encode()
        deployment = self.rng.choice(s.deployments)
        body: dict = {"messages": [{"role": "user", "content": prompt}], "max_tokens": s.max_tokens}
        if kind == "stream":
            body["stream"] = True
        path = f"/openai/deployments/{deployment}/chat/completions?api-version={s.api_version}"
        return deployment, path, json.dumps(body).encode()

    async def _one(self, conn: Connection, kind: str) -> tuple[Result, float]:
        """One request; returns its result and how long to wait before the next."""
        deployment, path, body = self._request(kind)
        sent = time.perf_counter()
        stream = Stream(sent) if kind == "stream" else None
        result = Result(kind, deployment, sent - self.t0, 0.0, 0)
        wait = 0.0
        try:
            async with asyncio.timeout(self.s.timeout):
                status, headers, _ = await conn.request(
                    "POST", path, self.headers, body, stream.feed if stream else None
                )
            result.status = status
            if status == 429:
                wait = min(retry_after_seconds(headers), self.s.max_backoff)
            elif stream and status == 200:
                result.ttft_ms, result.itls_ms = stream.ttft_ms, stream.itls_ms
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as e:
            conn.close()
            result.error = f"{type(e).__name__}: {e}"[:200]
            wait = 0.1  # a refused connection must not spin
        result.end = time.perf_counter() - self.t0
        return result, wait

    async def _worker(self, deadline: float) -> None:
        conn = Connection(self.s.url)
        kinds, weights = list(self.s.mix), list(self.s.mix.values())
        try:
            while time.perf_counter() < deadline:
                result, wait = await self._one(conn, self.rng.choices(kinds, weights)[0])
                self.results.append(result)
                if wait:
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
        finally:
            conn.close()

    async def run(self) -> float:
        """Run the load; return the wall time it took in seconds."""
        self.t0 = time.perf_counter()
        deadline = self.t0 + self.s.duration
        await asyncio.gather(*(self._worker(deadline) for _ in range(self.s.concurrency)))
        return time.perf_counter() - self.t0


async def configured_latency(settings: Settings) -> tuple[float | None, float | None]:
    """The first chat deployment's TTFT and ITL means from the simulator's /++/config, if any."""
    conn = Connection(settings.url)
    try:
        async with asyncio.timeout(5):
            status, _, body = await conn.request("GET", "/++/config", {"api-key": settings.key})
        if status != 200:
            return None, None
        return expected_latency(json.loads(body), settings.deployments[0])
    except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError, AttributeError):
        return None, None
    finally:
        conn.close()


def expected_latency(config: dict, deployment: str) -> tuple[float | None, float | None]:
    """A chat deployment's TTFT and ITL means as the simulator's GET /++/config describes
    them: its own latency, else the LATENCY_OPENAI_CHAT_COMPLETIONS_* setting (milliseconds a
    token, the first one too), else its model's defaults. /++/config shows only what was set,
    so the defaults come from the simulator's model catalogue beside this folder."""
    latency = config.get("latency") or {}
    if not latency.get("enabled", True):
        return 0.0, 0.0
    entry = (config.get("deployments") or {}).get(deployment)
    if entry is None and not config.get("allowUndefinedDeployments"):
        return None, None
    own = (entry or {}).get("latency")
    if own:
        return (own.get("timeToFirstTokenMs") or {}).get("mean"), (own.get("interTokenMs") or {}).get("mean")
    setting = (latency.get("chatCompletions") or {}).get("mean")
    if setting is not None:
        return setting, setting
    model = catalogue_chat_model(entry["model"] if entry else deployment)
    return (model.ttft_ms, model.itl_ms) if model is not None else (None, None)


def catalogue_chat_model(name: str):
    """The simulator's catalogue entry for a chat model (its default chat model for another
    name, as it does for an undefined deployment); None without the simulator's sources."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addons"))
    try:
        from aoai.openai import catalogue  # standard library only
    except ImportError:
        return None
    finally:
        del sys.path[0]
    model = catalogue.find_model(name)
    if model is None or model.kind != catalogue.CHAT:
        model = catalogue.MODELS[catalogue.DEFAULT_MODEL_FOR_KIND[catalogue.CHAT]]
    return model


# --- The report -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default method)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def distribution(values: list[float], expected: float | None = None) -> dict:
    out: dict = {"count": len(values)}
    for q in (50, 90, 99):
        out[f"p{q}"] = percentile(values, q)
    out["mean"] = sum(values) / len(values) if values else None
    out["expected"] = expected
    out["p50_over_expected"] = out["p50"] / expected if expected and out["p50"] is not None else None
    return out


def summarise(settings: Settings, results: list[Result], elapsed: float) -> dict:
    total = len(results)
    ok = sum(1 for r in results if 200 <= r.status < 300)
    throttled = sum(1 for r in results if r.status == 429)
    by_kind = {}
    for kind in KINDS:
        rs = [r for r in results if r.kind == kind]
        if not rs:
            continue
        by_kind[kind] = {
            "requests": len(rs),
            "ok": sum(1 for r in rs if 200 <= r.status < 300),
            "throttled": sum(1 for r in rs if r.status == 429),
            "request_ms": distribution([(r.end - r.start) * 1000 for r in rs if 200 <= r.status < 300]),
        }
    statuses: dict[str, int] = {}
    for r in results:
        key = str(r.status) if r.status else "no answer"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "url": settings.url,
        "duration_s": settings.duration,
        "elapsed_s": elapsed,
        "concurrency": settings.concurrency,
        "mix": settings.mix,
        "deployments": settings.deployments,
        "embedding_deployments": settings.embedding_deployments,
        "max_tokens": settings.max_tokens,
        "requests": total,
        "ok": ok,
        "throttled": throttled,
        "errors": total - ok - throttled,
        "statuses": statuses,
        "throughput_rps": total / elapsed if elapsed else 0.0,
        "ok_rps": ok / elapsed if elapsed else 0.0,
        "throttled_share": throttled / total if total else 0.0,
        "ttft_ms": distribution([r.ttft_ms for r in results if r.ttft_ms is not None], settings.expected_ttft_ms),
        "itl_ms": distribution([x for r in results for x in r.itls_ms], settings.expected_itl_ms),
        "by_kind": by_kind,
        "first_errors": sorted({r.error for r in results if r.error})[:5],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _dist_line(label: str, d: dict) -> str:
    line = f"{label:<16}n={d['count']:<6} p50 {_ms(d['p50']):>8}  p90 {_ms(d['p90']):>8}  p99 {_ms(d['p99']):>8}"
    if d.get("expected") is not None:
        ratio = d["p50_over_expected"]
        line += f"   configured {_ms(d['expected'])}" + (f" (p50 is {ratio:.2f}x)" if ratio is not None else "")
    return line


def render_text(summary: dict) -> str:
    mix = ", ".join(f"{k}={v:.2f}" for k, v in summary["mix"].items() if v)
    lines = [
        (
            f"Load test of {summary['url']}: {summary['duration_s']:g} s (ran {summary['elapsed_s']:.1f} s), "
            f"concurrency {summary['concurrency']}, mix {mix}"
        ),
        (
            f"deployments {', '.join(summary['deployments'])}; embeddings "
            f"{', '.join(summary['embedding_deployments'])}; max_tokens {summary['max_tokens']}"
        ),
        "",
        (
            f"requests    {summary['requests']} ({summary['throughput_rps']:.1f}/s)   "
            f"ok {summary['ok']} ({summary['ok_rps']:.1f}/s)   "
            f"429 {summary['throttled']} ({summary['throttled_share']:.1%})   other {summary['errors']}"
        ),
        "statuses    " + ", ".join(f"{k}: {v}" for k, v in sorted(summary["statuses"].items())),
        "",
        "latency, ms",
        _dist_line("TTFT", summary["ttft_ms"]),
        _dist_line("ITL", summary["itl_ms"]),
    ]
    if summary["ttft_ms"]["expected"] is None or summary["itl_ms"]["expected"] is None:
        lines.append("(configured latency unknown: pass --expected-ttft-ms and --expected-itl-ms to compare)")
    for kind, k in summary["by_kind"].items():
        lines.append(
            _dist_line(f"{kind} req", k["request_ms"])
            + f"   ({k['requests']} sent, {k['ok']} ok, {k['throttled']} throttled)"
        )
    if summary["statuses"].get("401"):
        lines += ["", "401: the endpoint refused the key; pass --key (make: LOADTEST_KEY=...)"]
    if summary["first_errors"]:
        lines += ["", "errors (first few):", *(f"  {e}" for e in summary["first_errors"])]
    return "\n".join(lines) + "\n"


def render_chart(summary: dict, results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI machines
    import matplotlib.pyplot as plt

    fig, (ax_ttft, ax_itl, ax_rate) = plt.subplots(3, 1, figsize=(9, 11))
    fig.suptitle(
        f"Load test of {summary['url']}: {summary['requests']} requests, "
        f"{summary['throttled_share']:.1%} throttled (429)"
    )

    for ax, key, title in ((ax_ttft, "ttft_ms", "Time to first token"), (ax_itl, "itl_ms", "Inter-token latency")):
        d = summary[key]
        values = (
            [r.ttft_ms for r in results if r.ttft_ms is not None]
            if key == "ttft_ms"
            else [x for r in results for x in r.itls_ms]
        )
        if values:
            ax.hist(values, bins=min(50, max(10, len(values) // 4)), color="tab:blue", alpha=0.75)
            ax.axvline(d["p50"], color="tab:blue", linestyle="--", label=f"p50 {d['p50']:.1f} ms")
            ax.axvline(d["p99"], color="tab:purple", linestyle=":", label=f"p99 {d['p99']:.1f} ms")
        else:
            ax.text(0.5, 0.5, "no streamed content frames", ha="center", va="center", transform=ax.transAxes)
        if d["expected"] is not None:
            ax.axvline(d["expected"], color="tab:red", label=f"configured {d['expected']:.1f} ms")
        ax.set_title(f"{title} (n={d['count']})")
        ax.set_xlabel("ms")
        ax.set_ylabel("frames" if key == "itl_ms" else "requests")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()

    seconds = max(1, math.ceil(max((r.end for r in results), default=0.0)))
    ok, throttled, other = ([0] * seconds for _ in range(3))
    for r in results:
        bucket = min(int(r.end), seconds - 1)
        (ok if 200 <= r.status < 300 else throttled if r.status == 429 else other)[bucket] += 1
    xs = range(seconds)
    ax_rate.bar(xs, ok, width=0.9, align="edge", color="tab:green", label="ok")
    ax_rate.bar(xs, throttled, width=0.9, align="edge", bottom=ok, color="tab:orange", label="429")
    ax_rate.bar(
        xs,
        other,
        width=0.9,
        align="edge",
        bottom=[a + b for a, b in zip(ok, throttled, strict=False)],
        color="tab:red",
        label="other",
    )
    ax_rate.set_title("Requests per second (by completion time)")
    ax_rate.set_xlabel("seconds since start")
    ax_rate.set_ylabel("requests")
    ax_rate.legend()

    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def write_report(settings: Settings, results: list[Result], elapsed: float) -> dict:
    summary = summarise(settings, results, elapsed)
    text = render_text(summary)
    out = Path(settings.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    txt, js, png = (out.with_name(out.name + ext) for ext in (".txt", ".json", ".png"))
    txt.write_text(text)
    js.write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(text)
    written = [txt, js]
    if settings.chart:
        render_chart(summary, results, png)
        written.append(png)
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_args(argv)
        if settings.chart:
            try:
                import matplotlib  # noqa: F401  (fail before the run, not after it)
            except ImportError:
                raise ArgumentError(
                    "matplotlib is needed for the chart: pip install -r loadtest/requirements.txt, or pass --no-chart"
                ) from None
    except ArgumentError as e:
        print(f"driver.py: {e}", file=sys.stderr)
        return 2
    if settings.expected_ttft_ms is None or settings.expected_itl_ms is None:
        ttft, itl = asyncio.run(configured_latency(settings))
        settings.expected_ttft_ms = settings.expected_ttft_ms if settings.expected_ttft_ms is not None else ttft
        settings.expected_itl_ms = settings.expected_itl_ms if settings.expected_itl_ms is not None else itl
    load = Load(settings)
    elapsed = asyncio.run(load.run())
    summary = write_report(settings, load.results, elapsed)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
