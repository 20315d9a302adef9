"""How loaded this process's vLLM engine is, for the autoscaling policy (`policy.py`).

`EngineLoadLogger` is a vLLM stat-logger plugin (entry point group `vllm.stat_logger_plugins`
in pyproject.toml): vLLM builds it into every AsyncLLM, which runs in the Serve replica's own
process, and hands it each engine step's scheduler and iteration stats. It keeps a short window
of the requests waiting for a batch slot and of times to first token; the replica reports them
to Ray Serve's autoscaler from `record_autoscaling_stats`. It also feeds the router's evidence of
the engine's step costs and draft acceptance (`observability/engine_steps.py`).

An entry point loads into every AsyncLLM of the environment, other applications' too (seen in
Ray Serve LLM's engines beside this app), and vLLM offers no way to decline: the logger only
records in processes the app marked as its engines (`APP_ENGINE_ENV`, set in the replicas'
runtime env) and is a no-op elsewhere.
"""

from __future__ import annotations

import os
import time
from collections import deque

import numpy as np
from vllm.v1.metrics.loggers import StatLoggerBase

from serve_app.autoscaling.policy import TTFT_P90, WAITING
from serve_app.observability.engine_steps import ENGINE_STEPS

WINDOW_S = 15.0
APP_ENGINE_ENV = "SPECSERVE_APP_ENGINE"


class EngineLoad:
    """Requests waiting per engine step and times to first token, over the last `window_s`."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        # Engine steps seen so far: periodic readers skip their work while it does not move.
        self.steps = 0
        self._waiting: deque[tuple[float, int]] = deque()
        self._ttft: deque[tuple[float, float]] = deque()

    def record(self, now: float, waiting: int | None, ttfts: list[float]) -> None:
        self.steps += 1
        if waiting is not None:
            self._waiting.append((now, waiting))
        self._ttft.extend((now, t) for t in ttfts)
        self._forget(now)

    def snapshot(self, now: float) -> dict[str, float]:
        """Mean requests waiting per step and p90 TTFT in the window; 0 for an idle engine."""
        self._forget(now)
        waiting = float(np.mean([n for _, n in self._waiting])) if self._waiting else 0.0
        ttft = float(np.percentile([t for _, t in self._ttft], 90)) if self._ttft else 0.0
        return {WAITING: waiting, TTFT_P90: ttft}

    def _forget(self, now: float) -> None:
        for samples in (self._waiting, self._ttft):
            while samples and samples[0][0] < now - self.window_s:
                samples.popleft()


# One engine per Serve replica process (target or draft worker).
ENGINE_LOAD = EngineLoad()


class EngineLoadLogger(StatLoggerBase):
    def __init__(self, vllm_config, engine_index: int = 0):
        self.active = os.environ.get(APP_ENGINE_ENV) == "1"

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        if not self.active:
            return
        now = time.monotonic()
        ENGINE_LOAD.record(
            now,
            scheduler_stats.num_waiting_reqs if scheduler_stats else None,
            iteration_stats.time_to_first_tokens_iter if iteration_stats else [],
        )
        if scheduler_stats is not None:
            spec = scheduler_stats.spec_decoding_stats
            ENGINE_STEPS.record(
                now,
                scheduler_stats.num_running_reqs,
                spec.num_draft_tokens_per_pos if spec else None,
                spec.num_accepted_tokens_per_pos if spec else None,
            )

    def log_engine_initialized(self) -> None:
        pass


class ReportsEngineLoad:
    """Mixed into the engine deployments; Ray Serve polls it on each replica for `EngineLoadPolicy`."""

    async def record_autoscaling_stats(self) -> dict[str, float]:
        return ENGINE_LOAD.snapshot(time.monotonic())
