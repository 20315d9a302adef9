"""Prometheus metrics of the app, exported through Ray's metrics agent.

vLLM's engine metrics (spec-decode counters, tokens, TTFT, TPOT) come from vLLM itself via
Ray Serve LLM (`log_engine_metrics`), labelled by model and ReplicaId. The metrics here add
what vLLM cannot know: which pool and speculation method served a request, and per-replica
pool identity. Each is created once per process, on first use.
"""

from __future__ import annotations

from functools import cache

from ray.serve import metrics

ROUTE_TAGS = ("model", "pool", "method", "request_class")
LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


@cache
def replica_info() -> metrics.Gauge:
    return metrics.Gauge(
        "specserve_replica_info",
        "1 per target replica; maps vLLM's ReplicaId to its pool",
        tag_keys=("model", "pool", "method", "ReplicaId"),
    )


@cache
def requests() -> metrics.Counter:
    return metrics.Counter("specserve_requests", "Requests by route and outcome", tag_keys=(*ROUTE_TAGS, "status"))


@cache
def refused_requests() -> metrics.Counter:
    return metrics.Counter(
        "specserve_refused_requests",
        "Completions an ingress replica refused over its ingress.overload.max_in_flight",
        tag_keys=("status",),
    )


@cache
def generated_tokens() -> metrics.Counter:
    return metrics.Counter("specserve_generated_tokens", "Completion tokens returned", tag_keys=ROUTE_TAGS)


@cache
def time_to_first_token() -> metrics.Histogram:
    return metrics.Histogram(
        "specserve_time_to_first_token_seconds",
        "TTFT seen at the ingress (streaming)",
        boundaries=LATENCY_BOUNDARIES_S,
        tag_keys=ROUTE_TAGS,
    )


@cache
def time_per_output_token() -> metrics.Histogram:
    return metrics.Histogram(
        "specserve_time_per_output_token_seconds",
        "Mean time per completion token after the first, seen at the ingress",
        boundaries=LATENCY_BOUNDARIES_S,
        tag_keys=ROUTE_TAGS,
    )


@cache
def router_choices() -> metrics.Counter:
    return metrics.Counter(
        "specserve_router_choices",
        "Speculation method chosen per request and why",
        tag_keys=("model", "request_class", "method", "reason"),
    )


ACCEPTANCE_TAGS = ("model", "pool", "request_class", "method")


@cache
def class_spec_counters() -> dict[str, metrics.Counter]:
    """Drafts and acceptance per request class and method, from the routed proposer's books."""
    names = {
        "drafts": "Drafts proposed",
        "draft_tokens": "Draft tokens proposed",
        "accepted_tokens": "Draft tokens accepted",
    }
    return {
        key: metrics.Counter(f"specserve_spec_{key}", f"{text}, per request class and method", tag_keys=ACCEPTANCE_TAGS)
        for key, text in names.items()
    }


@cache
def class_accepted_per_position() -> metrics.Counter:
    return metrics.Counter(
        "specserve_spec_accepted_tokens_per_pos",
        "Accepted draft tokens by draft position",
        tag_keys=(*ACCEPTANCE_TAGS, "position"),
    )


DRAFT_TAGS = ("model", "pool")
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
# A draft call is worth making only if it is a fraction of a target step (tens of ms).
DRAFT_LATENCY_BOUNDARIES_S = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]


@cache
def draft_totals() -> dict[str, metrics.Counter]:
    """Draft worker calls and exact sums for means (Ray's histograms report bucket-midpoint
    sums, not the observed ones), keyed like the proposer's `DraftCallStats`."""
    return {
        "calls": metrics.Counter(
            "specserve_draft_calls", "Batched calls from a target replica to its draft worker", tag_keys=DRAFT_TAGS
        ),
        "rows": metrics.Counter("specserve_draft_rows", "Requests drafted by the draft worker", tag_keys=DRAFT_TAGS),
        "wait_s": metrics.Counter(
            "specserve_draft_waited_seconds", "Seconds target steps waited for remote drafts", tag_keys=DRAFT_TAGS
        ),
    }


@cache
def draft_fallbacks() -> metrics.Counter:
    return metrics.Counter(
        "specserve_draft_fallbacks",
        "Engine steps that decoded without remote drafts (timeout, error, unavailable)",
        tag_keys=(*DRAFT_TAGS, "reason"),
    )


@cache
def draft_wait_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "specserve_draft_wait_seconds",
        "Time a target step waited for its remote drafts",
        boundaries=DRAFT_LATENCY_BOUNDARIES_S,
        tag_keys=DRAFT_TAGS,
    )


@cache
def draft_batch_size() -> metrics.Histogram:
    return metrics.Histogram(
        "specserve_draft_batch_size",
        "Requests drafted per call to the draft worker",
        boundaries=BATCH_BOUNDARIES,
        tag_keys=DRAFT_TAGS,
    )


@cache
def draft_worker_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "specserve_draft_worker_seconds",
        "Time the draft worker took per batched call",
        boundaries=DRAFT_LATENCY_BOUNDARIES_S,
        tag_keys=("model",),
    )


@cache
def draft_worker_batch_size() -> metrics.Histogram:
    return metrics.Histogram(
        "specserve_draft_worker_batch_size",
        "Contexts per batched call at the draft worker",
        boundaries=BATCH_BOUNDARIES,
        tag_keys=("model",),
    )


@cache
def tuned_k() -> metrics.Gauge:
    return metrics.Gauge(
        "specserve_tuned_k", "k the spec tuner set, per routed pool, request class and method", tag_keys=ACCEPTANCE_TAGS
    )


@cache
def tuned_k_changes() -> metrics.Counter:
    return metrics.Counter(
        "specserve_tuned_k_changes", "Changes of k by the spec tuner or a pin", tag_keys=ACCEPTANCE_TAGS
    )


@cache
def autoscaling_waiting_requests() -> metrics.Gauge:
    return metrics.Gauge(
        "specserve_autoscaling_waiting_requests",
        "Requests waiting for a batch slot per replica, as the autoscaling policy read them",
        tag_keys=("deployment",),
    )


@cache
def autoscaling_ttft_p90() -> metrics.Gauge:
    return metrics.Gauge(
        "specserve_autoscaling_ttft_p90_seconds",
        "p90 time to first token of the slowest replica, as the autoscaling policy read it",
        tag_keys=("deployment",),
    )
