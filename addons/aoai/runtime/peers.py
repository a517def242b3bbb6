"""Workers of one simulator reaching each other (scripts/workers.py runs several behind a
load balancer, which sends each request to one of them).

A save of recordings that reaches one worker is passed on to the others (`pass_on`), and a
scrape of /++/metrics collects every worker's metrics, each sample labelled with its worker
(`merge_metrics`). Everything else the workers share (configuration changes, resets, stored
responses, images, analyses) goes through Redis instead (shared.py, config_sync.py).

Calls between workers carry the launch's secret (SIMULATOR_PEER_SECRET) in `x-simulator-peer`;
a request whose header does not hold it is a client's like any other. They share one pooled
client (a `Link`, kept with the services), closed when the simulator stops.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from .config import SimulatorConfig

logger = logging.getLogger(__name__)

PEER_HEADER = "x-simulator-peer"  # on requests one worker makes of another: the launch's secret
TIMEOUT_S = 5.0
MISS_SECONDS = 5.0  # how long a relay that found nothing is remembered
MISS_ENTRIES = 1024


def from_peer(headers: Mapping[str, str], secret: str) -> bool:
    """Whether another worker of this launch made the request (it holds the secret)."""
    given = headers.get(PEER_HEADER)
    if given is None or not secret:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode())


class Link:
    """One pooled HTTP client for every call to the other workers, made when first needed (on
    the running loop), and the misses remembered."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client belongs to the loop it was made on (a test may run several in turn).
            self._client = httpx.AsyncClient(timeout=TIMEOUT_S, limits=httpx.Limits(max_keepalive_connections=32))
            self._loop = loop
        return self._client

    async def close(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()


def _headers(config: SimulatorConfig, **more: str) -> dict[str, str]:
    return {"api-key": config.api_key, PEER_HEADER: config.peer_secret, **more}


@dataclass(frozen=True)
class Outcome:
    """How one worker answered: its status (None when it could not be reached) and what it said."""

    status: int | None
    message: str = ""
    body: bytes = b""


async def ask_all(
    link: Link,
    config: SimulatorConfig,
    method: str,
    path: str,
    content: bytes,
    peers: tuple[str, ...] | None = None,
) -> dict[str, Outcome]:
    """Send the same request to every peer (or those given); each one's outcome by address."""
    headers = _headers(config, **{"content-type": "application/json"})
    targets = config.peers if peers is None else peers
    client = link.client()
    answers = await asyncio.gather(
        *(client.request(method, peer + path, content=content, headers=headers) for peer in targets),
        return_exceptions=True,
    )
    out: dict[str, Outcome] = {}
    for peer, answer in zip(targets, answers, strict=False):
        if isinstance(answer, BaseException):
            logger.warning("worker %s did not answer %s %s: %s", peer, method, path, answer)
            out[address(peer)] = Outcome(None, f"{type(answer).__name__}: {answer}".rstrip(": "))
        else:
            out[address(peer)] = Outcome(answer.status_code, _error_message(answer.content), answer.content)
    return out


def _error_message(content: bytes) -> str:
    """The message of an Azure-shaped error body, or ""."""
    try:
        error = orjson.loads(content).get("error", {})
        return str(error.get("message", "")) if isinstance(error, dict) else ""
    except (ValueError, AttributeError):
        return ""


async def pass_on(link: Link, config: SimulatorConfig, method: str, path: str, content: bytes) -> dict[str, int | str]:
    """Send the same request to every peer; each peer's status, or what went wrong."""
    outcomes = await ask_all(link, config, method, path, content)
    return {peer: o.status if o.status is not None else o.message for peer, o in outcomes.items()}


def address(peer: str) -> str:
    """host:port of a peer's base URL: how workers are named (SIMULATOR_WORKER)."""
    return peer.partition("//")[2]


async def scrape(link: Link, config: SimulatorConfig) -> dict[str, str]:
    """Each reachable peer's own metrics text by its address (one that does not answer is left out)."""
    client = link.client()
    headers = {PEER_HEADER: config.peer_secret}
    answers = await asyncio.gather(
        *(client.get(peer + "/++/metrics", headers=headers) for peer in config.peers), return_exceptions=True
    )
    texts = {}
    for peer, answer in zip(config.peers, answers, strict=False):
        if isinstance(answer, BaseException) or answer.status_code != 200:
            logger.warning("worker %s gave no metrics: %s", peer, answer)
            continue
        texts[address(peer)] = answer.text
    return texts


class _Merged:
    """A collector that yields the merged families once."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge_metrics(texts: dict[str, str]) -> bytes:
    """Prometheus texts of several workers as one, every sample labelled `worker`."""
    merged: dict[str, Metric] = {}
    for worker, text in texts.items():
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                into.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value, sample.timestamp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(merged.values())))
    return generate_latest(registry)
