"""The spec tuner: a Serve deployment that sets k per request class and method on routed pools.

Every target replica of a tuned pool reports its proposer's books and step timings each
period (`report`) and gets back the pool's current k table, which it hands to its workers
(`set_tuned_k`), so a decision reaches every running request within two periods and no
engine restarts. Each period the tuner folds the reports into per-(class, method) acceptance
estimates and a step-cost fit per pool, and moves each k to the best goodput at the pool's
current batch size, no sooner than `min_dwell_s` after its last change.

For a model whose router uses the goodput policy, the same deployment also plans routes: pools
that run one fixed method report their step times and per-class draft counts (`report_engine`),
and each period every class's options (each method it allows, and none, on the pool that would
serve it) are weighed by expected goodput (`router/planner.py`); ingress replicas fetch the
resulting table (`routing_table`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from serve_app.config.schema import AppConfig, ModelConfig, PoolConfig, TunerConfig
from serve_app.contract import (
    ClassRoute,
    DraftSample,
    EngineReport,
    RoutedReport,
    RouteTable,
    StepSample,
    TunedK,
    TunerAnswer,
)
from serve_app.observability import metrics
from serve_app.router.planner import NONE, ClassPlan, Option, candidates, plan_class
from serve_app.tuner.evidence import ClassEvidence, EnginePool, ReplicaTotals
from serve_app.tuner.goodput import StepCost, choose_k, expected_tokens, fit_step_cost, near_rows

# Ray Serve keeps this logger's records in the replica's log (a module logger's INFO is dropped).
logger = logging.getLogger("ray.serve")


@dataclass
class _KState(ClassEvidence):
    k: int
    k_min: int
    k_max: int
    changed_at: float
    pinned: bool = False  # held by an operator (`pin`): not tuned, not probed
    goodput: dict[int, float] | None = None  # smoothed over decisions
    goodput_rows: float = 1.0  # the batch size that goodput was computed at
    last: dict | None = None  # the last decision's inputs, for `state()`


class PoolTuner:
    """The tuner's view of one routed pool."""

    def __init__(self, model: ModelConfig, pool: PoolConfig, now: float):
        self.model, self.pool = model, pool
        self.config: TunerConfig = pool.speculation.tuner
        self.keys: dict[tuple[str, str], _KState] = {}
        for request_class in model.class_names():
            bounds = model.tuned_k(request_class, pool)
            if bounds is None:
                continue
            for method in pool.speculation.methods():
                if method != "none":
                    self.keys[(request_class, method)] = _KState(*bounds, changed_at=now)
        self.steps: deque[tuple[float, StepSample]] = deque()
        self.drafts: deque[tuple[float, DraftSample]] = deque()
        self.totals = ReplicaTotals()
        # The last cost fit and the batch size it was fit at: an idle pool keeps them, so the
        # router can still weigh sending a class here.
        self.cost: StepCost | None = None
        self.rows = 1.0
        self.applied: dict[str, list[TunedK]] = {}  # replica -> the k table it last applied

    def ingest(self, replica: str, report: RoutedReport, now: float) -> None:
        self.applied[replica] = report.get("applied", [])
        for tally in report["tallies"]:
            key = (tally["request_class"], tally["method"])
            asked, accepted = self.totals.increments(replica, key, tally)
            state = self.keys.get(key)
            if state is not None:
                state.report(asked, accepted)
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
        cost = fit_step_cost(
            [s for _, s in self.steps],
            [d for _, d in self.drafts],
            rows,
            {method: float(np.median(sizes)) for method, sizes in draft_rows.items()},
        )
        if cost is not None:
            self.cost, self.rows = cost, max(1.0, rows)
        changes = []
        for (request_class, method), state in self.keys.items():
            # A key without drafting steps this period is idle: its k is judged on its own traffic,
            # not re-judged at the batch size of other classes' traffic.
            if not any(state.new_asked):
                continue
            if state.fold(self.config, now):
                state.goodput = None  # the old regime's goodput must not slow the move to the new one
                logger.info(
                    "tuner %s/%s %s/%s: acceptance shifted; estimate restarts from the last steps",
                    self.model.id,
                    self.pool.name,
                    request_class,
                    method,
                )
            survival = state.estimate.survival(state.k_max, self.config.min_drafts)
            if state.pinned or cost is None or method not in cost.drafting or survival is None:
                continue  # held, or too little seen yet: k stays
            if not near_rows(self.rows, state.goodput_rows):
                state.goodput = None  # another batch size's curve: blended in, it would slow the move to this one's k
            choice = choose_k(
                survival,
                cost,
                rows,
                method,
                state.k_min,
                state.k_max,
                state.k,
                self.config.margin,
                state.goodput,
                self.config.smoothing,
            )
            state.goodput, state.goodput_rows = choice.goodput, self.rows
            state.last = {
                "rows": round(rows, 2),
                "survival": [round(p, 3) for p in survival],
                "goodput": {k: round(g, 2) for k, g in choice.goodput.items()},
                "cost": {"base_s": cost.base_s, "per_token_s": cost.per_token_s, "drafting": cost.drafting.get(method)},
            }
            if choice.k != state.k and now - state.changed_at >= self.config.min_dwell_s:
                changes.append((request_class, method, state.k, choice.k))
                logger.info(
                    "tuner %s/%s %s/%s: k %d -> %d; inputs %s",
                    self.model.id,
                    self.pool.name,
                    request_class,
                    method,
                    state.k,
                    choice.k,
                    state.last,
                )
                state.k, state.changed_at = choice.k, now
        return changes

    def pin(self, request_class: str, method: str, k: int | None, now: float) -> list[tuple[str, str, int, int]]:
        """Hold the key's k at `k` (None resumes tuning); returns the change, as `decide` does."""
        state = self.keys.get((request_class, method))
        if state is None:
            raise ValueError(f"pool {self.pool.name} tunes no ({request_class}, {method}); tuned: {sorted(self.keys)}")
        if k is not None and not 0 <= k <= state.k_max:
            raise ValueError(f"k must be from 0 to {state.k_max} for ({request_class}, {method}), got {k}")
        changes = [(request_class, method, state.k, k)] if k is not None and k != state.k else []
        if k is not None:
            state.k = k
        state.pinned, state.changed_at = k is not None, now
        return changes

    def option(self, request_class: str, method: str, now: float) -> Option:
        """What `method` would give one request of the class here, at the last cost fit and its best
        k for that batch size: the k the tuner is moving to, so method and k are chosen together."""
        state = self.keys.get((request_class, method))
        evidence: dict = {"rows": round(self.rows, 2)}
        if method == NONE and self.cost is not None:
            step_s = self.cost.seconds(self.rows, NONE, 0)
            return Option(method, self.pool.name, 0, 1.0 / step_s, {**evidence, "step_s": step_s})
        if state is None or self.cost is None:
            return Option(method, self.pool.name, state.k if state else 0, None, evidence)
        survival = state.estimate.survival(state.k_max, self.config.min_drafts)
        evidence["drafts"] = state.estimate.drafts_seen()
        k, drafting_known = state.k, method in self.cost.drafting
        if survival is None or (k and not drafting_known):
            return Option(method, self.pool.name, k, None, evidence)
        if state.pinned or not drafting_known:
            goodput = expected_tokens(survival, k) / self.cost.seconds(self.rows, method, k)
        else:
            choice = choose_k(survival, self.cost, self.rows, method, state.k_min, state.k_max, None, 0.0)
            k, goodput = choice.k, choice.goodput[choice.k]
        evidence.update(
            tokens_per_step=round(expected_tokens(survival, k), 3), step_s=self.cost.seconds(self.rows, method, k)
        )
        return Option(method, self.pool.name, k, goodput, evidence, state.age_s(now))

    def table(self) -> list[TunedK]:
        """(class, method, k, share of steps probed around k) per tuned key."""
        return [(c, m, s.k, self._probe_fraction(s)) for (c, m), s in self.keys.items()]

    def _probe_fraction(self, state: _KState) -> float:
        if state.pinned:
            return 0.0
        return self.config.zero_probe_fraction if state.k == 0 else self.config.probe_fraction

    def state(self) -> dict:
        return {
            "keys": [
                {
                    "request_class": c,
                    "method": m,
                    "k": s.k,
                    "k_min": s.k_min,
                    "k_max": s.k_max,
                    "pinned": s.pinned,
                    "acceptance": s.estimate.survival(s.k_max, self.config.min_drafts),
                    "last_decision": s.last,
                }
                for (c, m), s in self.keys.items()
            ],
            "applied": self.applied,
        }


class SpecTuner:
    """Tunes k on routed pools and, for models with the goodput router, plans which method each
    request class gets: the one place that holds the evidence, so every ingress replica routes by
    the same table."""

    def __init__(self, app_config: AppConfig):
        now = time.monotonic()
        self._pools = {
            (model.id, pool.name): PoolTuner(model, pool, now)
            for model in app_config.models
            for pool in model.pools
            if pool.speculation.tuned()
        }
        self._routed_models = [m for m in app_config.models if m.routes_by_goodput()]
        self._engines = {
            (model.id, pool.name): EnginePool(model, pool, TunerConfig())
            for model in app_config.models
            for pool in model.reporting_pools()
        }
        self._plans: dict[str, dict[str, ClassPlan]] = {m.id: {} for m in self._routed_models}
        self._loop = asyncio.get_running_loop().create_task(self._control())

    async def report(self, model: str, pool: str, replica: str, report: RoutedReport) -> TunerAnswer:
        """A replica's books since the last report in; the pool's k table out."""
        tuner = self._pools[(model, pool)]
        tuner.ingest(replica, report, time.monotonic())
        return TunerAnswer(tuned_k=tuner.table())

    async def report_engine(self, model: str, pool: str, replica: str, report: EngineReport) -> None:
        """Step timings and per-class draft counts of a pool that runs one fixed method."""
        self._engines[(model, pool)].ingest(replica, report, time.monotonic())

    async def acceptance(self) -> dict[str, list[dict]]:
        """Per pool ("model/pool") and per request class and method: drafts, draft tokens and
        accepted tokens since the replicas started, the acceptance rate and the mean acceptance
        length, from the replicas' own books (routed pools) and vLLM's counters (the others)."""
        out: dict[str, list[dict]] = {}
        for (model, pool), tuner in self._pools.items():
            rows = tuner.totals.acceptance()
            out[f"{model}/{pool}"] = [{"request_class": c, "method": m, **asdict(s)} for (c, m), s in rows.items()]
        for (model, pool), engine in self._engines.items():
            rows = engine.totals.acceptance()
            if engine.method != NONE:
                out[f"{model}/{pool}"] = [
                    {"request_class": c, "method": engine.method, **asdict(s)} for (c,), s in rows.items()
                ]
        return out

    async def routing_table(self) -> RouteTable:
        """Per model and request class: the method it gets and the shares sent elsewhere to explore."""
        return {
            model: {c: ClassRoute(method=p.method, explore=p.explore) for c, p in plans.items()}
            for model, plans in self._plans.items()
        }

    async def router_state(self) -> dict:
        """Per model and class: every option's expected goodput and evidence, and the current choice."""
        return {model: {c: p.to_dict() for c, p in plans.items()} for model, plans in self._plans.items()}

    def _plan(self, model: ModelConfig, now: float) -> None:
        plans = self._plans[model.id]
        for request_class in model.router.classes:
            options = {}
            for method in candidates(request_class.methods):
                pool = model.pool_for_method(method, by_policy=True)
                if pool is None:
                    continue
                if (model.id, pool.name) in self._engines:
                    options[method] = self._engines[(model.id, pool.name)].option(request_class.name, now)
                elif (model.id, pool.name) in self._pools:
                    options[method] = self._pools[(model.id, pool.name)].option(request_class.name, method, now)
                else:  # a routed pool without a tuner measures nothing
                    options[method] = Option(method, pool.name, model.class_k(request_class.name, pool), None)
            previous = plans.get(request_class.name)
            plan = plan_class(
                request_class.default,
                options,
                previous.method if previous else None,
                model.router.switch_margin,
                model.router.explore_share,
                model.router.explore_after_s,
            )
            if previous is not None and plan.method != previous.method:
                logger.info(
                    "router %s %s: %s -> %s; options %s",
                    model.id,
                    request_class.name,
                    previous.method,
                    plan.method,
                    {m: o.goodput for m, o in options.items()},
                )
            plans[request_class.name] = plan

    async def pin(self, model: str, pool: str, request_class: str, method: str, k: int | None) -> None:
        """Hold a key's k (an operator's override, and how tests set a known k); None resumes tuning."""
        tuner = self._pools.get((model, pool))
        if tuner is None:
            raise ValueError(f"no tuned pool {pool!r} of model {model!r}; tuned: {sorted(self._pools)}")
        self._export((model, pool), tuner, tuner.pin(request_class, method, k, time.monotonic()))

    async def state(self) -> dict:
        return {f"{model}/{pool}": tuner.state() for (model, pool), tuner in self._pools.items()}

    async def _control(self) -> None:
        periods = [t.config.period_s for t in [*self._pools.values(), *self._engines.values()]]
        period = min(periods, default=5.0)
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
            for engine in self._engines.values():
                engine.update(now)
            for model in self._routed_models:
                try:
                    self._plan(model, now)
                except Exception:  # the ingress keeps routing by the last table
                    logger.exception("planning routes for %s failed", model.id)
            await asyncio.sleep(period)

    @staticmethod
    def _export(key: tuple[str, str], tuner: PoolTuner, changes: list) -> None:
        tags = {"model": key[0], "pool": key[1]}
        for request_class, method, k, _ in tuner.table():
            metrics.tuned_k().set(k, tags={**tags, "request_class": request_class, "method": method})
        for request_class, method, _, _ in changes:
            metrics.tuned_k_changes().inc(tags={**tags, "request_class": request_class, "method": method})
