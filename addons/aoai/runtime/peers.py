"""Workers of one simulator reaching each other (scripts/workers.py runs several behind a
load balancer, which sends each request to one of them).

A configuration change, a save of recordings or a reset of the rate limits that reaches one
worker is passed on to the others (`pass_on`), marked so they do not pass it on again; a
scrape of /++/metrics collects every worker's metrics, each sample labelled with its worker
(`merge_metrics`).
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

PEER_HEADER = "x-simulator-peer"  # on requests one worker passes to another
TIMEOUT_S = 5.0


def from_peer(headers) -> bool:
    return headers.get(PEER_HEADER) is not None


async def pass_on(peers: tuple[str, ...], method: str, path: str, content: bytes, key: str,
                  worker: str) -> dict[str, int | str]:
    """Send the same request to every peer; each peer's status, or what went wrong."""
    headers = {"api-key": key, PEER_HEADER: worker or "1", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        answers = await asyncio.gather(*(client.request(method, peer + path, content=content, headers=headers)
                                         for peer in peers), return_exceptions=True)
    out: dict[str, int | str] = {}
    for peer, answer in zip(peers, answers):
        if isinstance(answer, BaseException):
            logger.warning("worker %s did not take %s %s: %s", peer, method, path, answer)
            out[address(peer)] = f"{type(answer).__name__}: {answer}"
        else:
            out[address(peer)] = answer.status_code
    return out


def address(peer: str) -> str:
    """host:port of a peer's base URL: how workers are named (SIMULATOR_WORKER)."""
    return peer.partition("//")[2]


async def scrape(peers: tuple[str, ...]) -> dict[str, str]:
    """Each reachable peer's own metrics text by its address (one that does not answer is left out)."""
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        answers = await asyncio.gather(*(client.get(peer + "/++/metrics", headers={PEER_HEADER: "1"})
                                         for peer in peers), return_exceptions=True)
    texts = {}
    for peer, answer in zip(peers, answers):
        if isinstance(answer, BaseException) or answer.status_code != 200:
            logger.warning("worker %s gave no metrics: %s", peer, answer)
            continue
        texts[address(peer)] = answer.text
    return texts


async def relay(peers: tuple[str, ...], method: str, path: str, key: str) -> httpx.Response | None:
    """Ask every peer the same request about something only one of them holds (a stored
    response, an image it made); the first answer that is not a 404, or None."""
    headers = {"api-key": key, PEER_HEADER: "1"}
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        answers = await asyncio.gather(*(client.request(method, peer + path, headers=headers) for peer in peers),
                                       return_exceptions=True)
    return next((a for a in answers if not isinstance(a, BaseException) and a.status_code != 404), None)


class _Merged:
    """A collector that yields the merged families once."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self):
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
