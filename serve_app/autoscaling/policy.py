"""Ray Serve autoscaling policy for vLLM engine deployments (target pools and draft workers).

Ray Serve's default rule scales on requests in flight per replica. For an LLM engine that is a
proxy: with continuous batching one replica serves many requests at once, and what users feel
is the queue in front of the batch and the time to first token. This policy keeps Ray Serve's
rule and adds the two signals each replica reports (`engine_load.py`):
- requests waiting for a batch slot: above `max_waiting_requests` per replica, one more replica;
- p90 time to first token of the slowest replica: above `ttft_slo_s`, replicas in proportion
  to how far over it is (at most double), as TTFT grows with the queue.
It scales down only by Ray Serve's rule, and only while nothing waits and TTFT is under half its
objective. Ray Serve applies min/max replicas and the upscale/downscale delays around it.

Runs in the Serve controller; it imports no vLLM.
"""

from __future__ import annotations

import math

from serve_app.observability import metrics

# The names replicas report under (`record_autoscaling_stats`).
WAITING = "waiting_requests"
TTFT_P90 = "ttft_p90_s"


class EngineLoadPolicy:
    def __init__(self, ttft_slo_s: float | None = None, max_waiting_requests: float = 1.0):
        self.ttft_slo_s = ttft_slo_s
        self.max_waiting_requests = max_waiting_requests

    def __call__(self, ctx) -> tuple[float, dict]:
        current = ctx.current_num_replicas
        if current == 0:
            return ctx.target_num_replicas, {}
        by_requests = ctx.total_num_requests / ctx.config.get_target_ongoing_requests()
        reported = ctx.aggregated_metrics or {}
        waiting_by_replica = reported.get(WAITING) or {}
        waiting = sum(waiting_by_replica.values()) / max(len(waiting_by_replica), 1)
        ttft = max((reported.get(TTFT_P90) or {}).values(), default=0.0)
        over_slo = self.ttft_slo_s is not None and ttft > self.ttft_slo_s
        if waiting > self.max_waiting_requests or over_slo:
            by_ttft = current * min(ttft / self.ttft_slo_s, 2.0) if over_slo else 0.0
            desired, rule = max(by_requests, current + 1, math.ceil(by_ttft)), "engine_load"
        elif waiting > 0 or (self.ttft_slo_s is not None and ttft > self.ttft_slo_s / 2):
            desired, rule = max(by_requests, current), "hold"
        else:
            desired, rule = by_requests, "requests"
        # Ray Serve exports the decision itself (serve_autoscaling_desired_replicas); these are its inputs.
        tags = {"deployment": ctx.deployment_name}
        metrics.autoscaling_waiting_requests().set(waiting, tags=tags)
        metrics.autoscaling_ttft_p90().set(ttft, tags=tags)
        return desired, {WAITING: waiting, TTFT_P90: ttft, "rule": rule}
