"""Read the app's metrics back from a Prometheus endpoint (Ray's metrics agent).

vLLM's counters are labelled by ReplicaId only; `specserve_replica_info` maps each ReplicaId
to its pool, so per-pool sums join the two here, as a PromQL `group_left` would.
"""

from __future__ import annotations

from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Ray prefixes application metrics with "ray_" and vLLM's ":" becomes "_".
REPLICA_INFO = "ray_specserve_replica_info"
SPEC_COUNTERS = {
    "drafts": "ray_vllm_spec_decode_num_drafts_total",
    "draft_tokens": "ray_vllm_spec_decode_num_draft_tokens_total",
    "accepted_tokens": "ray_vllm_spec_decode_num_accepted_tokens_total",
    "requests": "ray_vllm_request_success_total",
    "generation_tokens": "ray_vllm_generation_tokens_total",
}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` in a Prometheus text exposition."""
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def scrape(url: str) -> str:
    return httpx.get(url, timeout=10).text


def per_pool(text: str) -> dict[str, dict[str, float]]:
    """Engine counters summed per pool (pools with no sample yet are absent)."""
    pool_of = {labels["ReplicaId"]: labels["pool"] for labels, value in samples(text, REPLICA_INFO) if value}
    totals: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SPEC_COUNTERS, 0.0))
    for key, name in SPEC_COUNTERS.items():
        for labels, value in samples(text, name):
            pool = pool_of.get(labels.get("ReplicaId", ""))
            if pool is not None:
                totals[pool][key] += value
    return dict(totals)
