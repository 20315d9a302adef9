"""HTTP load over a list of request bodies: N concurrent streaming OpenAI clients (closed loop),
or requests sent at Poisson arrivals whatever the answers take (open loop)."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class RequestResult:
    ttft_s: float
    e2e_s: float
    completion_tokens: int
    headers: dict[str, str]
    finish_reason: str | None = None  # the last choice's; None: the stream ended without one

    @property
    def tpot_s(self) -> float | None:
        if self.completion_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)


class RequestFailed(RuntimeError):
    """A request the app answered with an error status."""

    def __init__(self, status_code: int, body: bytes):
        super().__init__(f"HTTP {status_code}: {body.decode(errors='replace')[:300]}")
        self.status_code = status_code


def reset_prefix_cache(base_url: str, model: str, control_key: str) -> None:
    """Every target replica of `model` starts cold: arms that send the same prompts must not
    find each other's in vLLM's prefix cache (a control route: the app's control key)."""
    response = httpx.post(
        f"{base_url}/v1/spec/reset_prefix_cache",
        json={"model": model},
        headers={"authorization": f"Bearer {control_key}"},
        timeout=120,
    )
    if response.status_code != 200:
        raise RequestFailed(response.status_code, response.content)


def endpoint(body: dict) -> str:
    return "/v1/chat/completions" if "messages" in body else "/v1/completions"


async def stream_request(client: httpx.AsyncClient, body: dict, headers: dict[str, str]) -> RequestResult:
    """One streaming completion or chat completion (by the body's shape), timed."""
    start = time.perf_counter()
    ttft = finish = None
    usage: dict = {}
    # Usage in the stream: the app adds it anyway, Ray Serve LLM and vLLM only when asked.
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", endpoint(body), json=payload, headers=headers) as resp:
        if resp.status_code != 200:
            raise RequestFailed(resp.status_code, await resp.aread())
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            if ttft is None and chunk.get("choices"):
                ttft = time.perf_counter() - start
            finish = next((c["finish_reason"] for c in chunk.get("choices", []) if c.get("finish_reason")), finish)
            usage = chunk.get("usage") or usage
        response_headers = dict(resp.headers)
    e2e = time.perf_counter() - start
    return RequestResult(
        ttft if ttft is not None else e2e, e2e, usage.get("completion_tokens", 0), response_headers, finish
    )


async def run_load(
    base_url: str, bodies: list[dict], concurrency: int, headers: dict[str, str] | None = None
) -> tuple[list[RequestResult], float]:
    """Send every body with `concurrency` clients in flight; returns results and wall time."""
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:

        async def worker():
            while not queue.empty():
                results.append(await stream_request(client, queue.get_nowait(), headers or {}))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return results, wall


async def run_poisson(
    base_url: str, bodies: list[dict], rate_per_s: float, headers: dict[str, str] | None = None, seed: int = 0
) -> tuple[list[RequestResult], float]:
    """Send every body at exponential gaps of mean 1/`rate_per_s` (seeded, so every arm sees
    the same arrivals), each on its own stream; returns results and the wall time until the last
    answer ended."""
    gaps = random.Random(seed)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=httpx.Limits(max_connections=None)) as client:
        start = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            if i:  # no wait after the last request: the wall time ends with the answers
                await asyncio.sleep(gaps.expovariate(rate_per_s))
            tasks.append(asyncio.create_task(stream_request(client, body, headers or {})))
        results = list(await asyncio.gather(*tasks))
        wall = time.perf_counter() - start
    return results, wall


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(results: list[RequestResult], wall_s: float) -> dict:
    tokens = sum(r.completion_tokens for r in results)
    ttfts = [r.ttft_s for r in results]
    tpots = [r.tpot_s for r in results if r.tpot_s is not None]
    return {
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s,
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p99_ms": percentile(ttfts, 99) * 1000,
        "tpot_p50_ms": percentile(tpots, 50) * 1000,
        "tpot_p99_ms": percentile(tpots, 99) * 1000,
    }
