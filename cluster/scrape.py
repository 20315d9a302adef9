"""Read the app's metrics back from a Prometheus endpoint (Ray's metrics agent).

vLLM's counters are labelled by ReplicaId only; `specserve_replica_info` maps each ReplicaId
to its pool, so per-pool sums join the two here, as a PromQL `group_left` would. The app's
own per-pool metrics (draft worker calls) carry the pool label themselves.
"""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Ray prefixes application metrics with "ray_" and vLLM's ":" becomes "_".
REPLICA_INFO = "ray_specserve_replica_info"
POOL_COUNTERS = {
    "drafts": "ray_vllm_spec_decode_num_drafts_total",
    "draft_tokens": "ray_vllm_spec_decode_num_draft_tokens_total",
    "accepted_tokens": "ray_vllm_spec_decode_num_accepted_tokens_total",
    "requests": "ray_vllm_request_success_total",
    "generation_tokens": "ray_vllm_generation_tokens_total",
    "prefix_cache_hits": "ray_vllm_prefix_cache_hits_total",  # prompt tokens found in the cache
    "draft_calls": "ray_specserve_draft_calls_total",
    "draft_rows": "ray_specserve_draft_rows_total",
    "draft_wait_s": "ray_specserve_draft_waited_seconds_total",
    "draft_fallbacks": "ray_specserve_draft_fallbacks_total",
}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` in a Prometheus text exposition."""
    return [
        (s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    ]


def scrape(url: str) -> str:
    return httpx.get(url, timeout=10).text


def per_pool(text: str) -> dict[str, dict[str, float]]:
    """Engine counters summed per pool (pools with no sample yet are absent)."""
    pool_of = {labels["ReplicaId"]: labels["pool"] for labels, value in samples(text, REPLICA_INFO) if value}
    totals: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(POOL_COUNTERS, 0.0))
    for key, name in POOL_COUNTERS.items():
        for labels, value in samples(text, name):
            pool = labels.get("pool") or pool_of.get(labels.get("ReplicaId", ""))
            if pool is not None:
                totals[pool][key] += value
    return dict(totals)


def pool_counters(url: str, pool: str) -> dict[str, float]:
    return per_pool(scrape(url)).get(pool, dict.fromkeys(POOL_COUNTERS, 0.0))


def settled_pool_counters(url: str, pool: str, min_requests: float, deadline_s: float = 60) -> dict[str, float]:
    """A pool's counters once they count `min_requests` finished requests: Ray's exporter lags
    the engine by seconds, and the spec counters of a request are recorded before it finishes.
    Returns the last reading if the deadline passes first."""
    deadline = time.monotonic() + deadline_s
    while True:
        counters = pool_counters(url, pool)
        if counters["requests"] >= min_requests or time.monotonic() > deadline:
            return counters
        time.sleep(1)


# A counter reaches the exporter up to a replica's publishing period (5 s, target/server.py)
# plus Ray's report interval (10 s) after it was recorded.
QUIET_S = 16


def quiet_pool_counters(url: str, pool: str, quiet_s: float = QUIET_S, deadline_s: float = 60) -> dict[str, float]:
    """A pool's counters once they have not changed for `quiet_s`, so nothing recorded earlier
    is still on its way to the exporter."""
    deadline = time.monotonic() + deadline_s
    last, since = pool_counters(url, pool), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = pool_counters(url, pool)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last
