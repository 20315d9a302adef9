"""The spec tuner: a Serve deployment that sets k per request class and method on routed pools.

Every target replica of a tuned pool reports its proposer's books and step timings each
period (`report`) and gets back the pool's current k table, which it hands to its workers
(`set_tuned_k`), so a decision reaches every running request within two periods and no
engine restarts. Each period the tuner folds the reports into per-(class, method) acceptance
estimates and a step-cost fit per pool, and moves each k to the best goodput at the pool's
current batch size, no sooner than `min_dwell_s` after its last change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from serve_app.config.schema import AppConfig, ModelConfig, PoolConfig, TunerConfig
from serve_app.observability import metrics
from serve_app.tuner.goodput import AcceptanceEstimate, padded, choose_k, fit_step_cost

# Ray Serve keeps this logger's records in the replica's log (a module logger's INFO is dropped).
logger = logging.getLogger("ray.serve")


@dataclass
class _KState:
    k: int
    k_min: int
    k_max: int
    changed_at: float
    pinned: bool = False  # held by an operator (`pin`): not tuned, not probed
    estimate: AcceptanceEstimate = field(default_factory=AcceptanceEstimate)
    # Per-position counts reported since the last decision.
    new_asked: list[int] = field(default_factory=list)
    new_accepted: list[int] = field(default_factory=list)
    goodput: dict[int, float] | None = None  # smoothed over decisions
    last: dict | None = None  # the last decision's inputs, for `state()`


class PoolTuner:
    """The tuner's view of one routed pool."""

    def __init__(self, model: ModelConfig, pool: PoolConfig, now: float):
        self.model, self.pool = model, pool
        self.config: TunerConfig = pool.speculation.tuner
        self.keys: dict[tuple[str, str], _KState] = {}
        for request_class in model.class_names():
            limits = self.config.limits(request_class, pool.speculation.num_speculative_tokens)
            if limits is None:
                continue
            for method in pool.speculation.methods():
                if method != "none":
                    k = min(max(model.class_k(request_class, pool), limits[0]), limits[1])
                    self.keys[(request_class, method)] = _KState(k, *limits, changed_at=now)
        self.steps: deque[tuple[float, dict]] = deque()
        self.drafts: deque[tuple[float, dict]] = deque()
        self._replica_totals: dict[str, dict[tuple[str, str], dict]] = {}
        self.applied: dict[str, list] = {}  # replica -> the k table it last applied

    def ingest(self, replica: str, report: dict, now: float) -> None:
        self.applied[replica] = report.get("applied", [])
        totals = self._replica_totals.setdefault(replica, {})
        for tally in report["tallies"]:
            key = (tally["request_class"], tally["method"])
            before = totals.get(key)
            if before is None or _asked(tally) < _asked(before):  # new or restarted replica
                before = {"asked_per_position": [], "accepted_per_position": []}
            totals[key] = tally
            state = self.keys.get(key)
            if state is not None:
                state.new_asked = _add(state.new_asked, tally["asked_per_position"], before["asked_per_position"])
                state.new_accepted = _add(state.new_accepted, tally["accepted_per_position"],
                                          before["accepted_per_position"])
        self.steps.extend((now, s) for s in report["steps"])
        self.drafts.extend((now, d) for d in report["drafts"])

    def decide(self, now: float) -> list[tuple[str, str, int, int]]:
        """Move each k to its best goodput; returns the changes as (class, method, old k, new k)."""
        for samples in (self.steps, self.drafts):
            while samples and samples[0][0] < now - self.config.cost_window_s:
                samples.popleft()
        since = now - self.config.period_s
        recent = [s["rows"] for t, s in self.steps if t >= since]
        rows = sum(recent) / len(recent) if recent else 0.0
        draft_rows: dict[str, list[int]] = {}
        for t, d in self.drafts:
            if t >= since:
                draft_rows.setdefault(d["method"], []).append(d["rows"])
        cost = fit_step_cost([s for _, s in self.steps], [d for _, d in self.drafts], rows,
                             {method: float(np.median(sizes)) for method, sizes in draft_rows.items()})
        changes = []
        for (request_class, method), state in self.keys.items():
            # A key without drafting steps this period is idle: its k is judged on its own traffic,
            # not re-judged at the batch size of other classes' traffic.
            if not any(state.new_asked):
                continue
            if state.estimate.update(state.new_asked, state.new_accepted, self.config.memory_steps,
                                     self.config.min_drafts, self.config.shift_threshold):
                state.goodput = None  # the old regime's goodput must not slow the move to the new one
                logger.info("tuner %s/%s %s/%s: acceptance shifted; estimate restarts from the last steps",
                            self.model.id, self.pool.name, request_class, method)
            state.new_asked, state.new_accepted = [], []
            survival = state.estimate.survival(state.k_max, self.config.min_drafts)
            if state.pinned or cost is None or method not in cost.drafting or survival is None:
                continue  # held, or too little seen yet: k stays
            choice = choose_k(survival, cost, rows, method, state.k_min, state.k_max, state.k, self.config.margin,
                              state.goodput, self.config.smoothing)
            state.goodput = choice.goodput
            state.last = {"rows": round(rows, 2), "survival": [round(p, 3) for p in survival],
                          "goodput": {k: round(g, 2) for k, g in choice.goodput.items()},
                          "cost": {"base_s": cost.base_s, "per_token_s": cost.per_token_s,
                                   "drafting": cost.drafting.get(method)}}
            if choice.k != state.k and now - state.changed_at >= self.config.min_dwell_s:
                changes.append((request_class, method, state.k, choice.k))
                logger.info("tuner %s/%s %s/%s: k %d -> %d; inputs %s", self.model.id, self.pool.name,
                            request_class, method, state.k, choice.k, state.last)
                state.k, state.changed_at = choice.k, now
        return changes

    def pin(self, request_class: str, method: str, k: int | None, now: float) -> None:
        state = self.keys.get((request_class, method))
        if state is None:
            raise ValueError(f"pool {self.pool.name} tunes no ({request_class}, {method}); tuned: {sorted(self.keys)}")
        if k is not None and not 0 <= k <= state.k_max:
            raise ValueError(f"k must be from 0 to {state.k_max} for ({request_class}, {method}), got {k}")
        if k is not None:
            state.k = k
        state.pinned, state.changed_at = k is not None, now

    def table(self) -> list[tuple[str, str, int, float]]:
        """(class, method, k, share of steps probed around k) per tuned key."""
        return [(c, m, s.k, self._probe_fraction(s)) for (c, m), s in self.keys.items()]

    def _probe_fraction(self, state: _KState) -> float:
        if state.pinned:
            return 0.0
        return self.config.zero_probe_fraction if state.k == 0 else self.config.probe_fraction

    def state(self) -> dict:
        return {"keys": [{"request_class": c, "method": m, "k": s.k, "k_min": s.k_min, "k_max": s.k_max,
                          "pinned": s.pinned, "acceptance": s.estimate.survival(s.k_max, self.config.min_drafts),
                          "last_decision": s.last} for (c, m), s in self.keys.items()],
                "applied": self.applied}


def _asked(tally: dict) -> int:
    """Steps that asked for a draft: the count every per-position count grows with. (`drafts`
    does not: steps whose ngram lookup found nothing ask, but propose no draft.)"""
    return (tally["asked_per_position"] or [0])[0]


def _add(acc: list[int], total: list[int], before: list[int]) -> list[int]:
    size = max(len(acc), len(total))
    return [a + t - b for a, t, b in zip(padded(acc, size), padded(total, size), padded(before, size))]


class SpecTuner:
    def __init__(self, app_config: AppConfig):
        now = time.monotonic()
        self._pools = {(model.id, pool.name): PoolTuner(model, pool, now)
                       for model in app_config.models for pool in model.pools
                       if pool.speculation.tuned()}
        self._loop = asyncio.get_running_loop().create_task(self._control())

    async def report(self, model: str, pool: str, replica: str, report: dict) -> dict:
        """A replica's books since the last report in; the pool's k table out."""
        tuner = self._pools[(model, pool)]
        tuner.ingest(replica, report, time.monotonic())
        return {"tuned_k": tuner.table()}

    async def pin(self, model: str, pool: str, request_class: str, method: str, k: int | None) -> None:
        """Hold a key's k (an operator's override, and how tests set a known k); None resumes tuning."""
        tuner = self._pools.get((model, pool))
        if tuner is None:
            raise ValueError(f"no tuned pool {pool!r} of model {model!r}; tuned: {sorted(self._pools)}")
        tuner.pin(request_class, method, k, time.monotonic())

    async def state(self) -> dict:
        return {f"{model}/{pool}": tuner.state() for (model, pool), tuner in self._pools.items()}

    async def _control(self) -> None:
        period = min((t.config.period_s for t in self._pools.values()), default=5.0)
        next_run = {key: 0.0 for key in self._pools}
        while True:
            now = time.monotonic()
            for key, tuner in self._pools.items():
                if now >= next_run[key]:
                    next_run[key] = now + tuner.config.period_s
                    try:
                        self._export(key, tuner, tuner.decide(now))
                    except Exception:  # one bad period must not stop tuning
                        logger.exception("tuning %s failed", key)
            await asyncio.sleep(period)

    @staticmethod
    def _export(key: tuple[str, str], tuner: PoolTuner, changes: list) -> None:
        tags = {"model": key[0], "pool": key[1]}
        for request_class, method, k, _ in tuner.table():
            metrics.tuned_k().set(k, tags={**tags, "request_class": request_class, "method": method})
        for request_class, method, _, _ in changes:
            metrics.tuned_k_changes().inc(tags={**tags, "request_class": request_class, "method": method})
