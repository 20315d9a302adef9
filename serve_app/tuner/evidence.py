"""Evidence the tuner folds from replica reports: per-position draft counts that grew since a
replica's last report, and the goodput of pools that run one fixed method.

A routed pool's evidence (acceptance per class and method, a per-k cost model) lives in
`spec_tuner.PoolTuner`. A pool whose engine runs one method at a fixed k (none, or an in-engine
drafter such as draft_model) cannot be asked about other k: its option per class is the measured
expected tokens per step at its k over its measured step seconds at its current batch size.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from serve_app.config.schema import ModelConfig, PoolConfig, TunerConfig
from serve_app.contract import AcceptanceTally, ClassShare, EngineReport, EngineStep
from serve_app.router.planner import NONE, Option
from serve_app.tuner.goodput import MIN_COST_SAMPLES, AcceptanceEstimate, expected_tokens, near, padded


class ReplicaTotals:
    """Replicas report cumulative per-position counts per key; this turns them into increments."""

    def __init__(self):
        self._totals: dict[str, dict[tuple, AcceptanceTally | ClassShare]] = {}

    def increments(
        self, replica: str, key: tuple, tally: AcceptanceTally | ClassShare
    ) -> tuple[list[float], list[float]]:
        totals = self._totals.setdefault(replica, {})
        before = totals.get(key)
        if before is None or _asked(tally) < _asked(before):  # new or restarted replica
            before = {"asked_per_position": [], "accepted_per_position": []}
        totals[key] = tally
        return (
            _minus(tally["asked_per_position"], before["asked_per_position"]),
            _minus(tally["accepted_per_position"], before["accepted_per_position"]),
        )

    def acceptance(self) -> dict[tuple, AcceptanceSummary]:
        """Per key, the replicas' latest cumulative counts summed: what the pool's drafts earned."""
        sums: dict[tuple, list[float]] = {}
        for totals in self._totals.values():
            for key, tally in totals.items():
                row = sums.setdefault(key, [0.0, 0.0, 0.0])
                for i, count in enumerate(_counts(tally)):
                    row[i] += count
        return {key: AcceptanceSummary.of(*row) for key, row in sums.items()}


@dataclass(frozen=True)
class AcceptanceSummary:
    """vLLM's definitions: the acceptance rate is accepted over proposed draft tokens; the mean
    acceptance length is tokens per verify step, 1 + accepted per draft."""

    drafts: float
    draft_tokens: float
    accepted_tokens: float
    acceptance_rate: float | None
    mean_acceptance_length: float | None

    @classmethod
    def of(cls, drafts: float, draft_tokens: float, accepted: float) -> AcceptanceSummary:
        rate = accepted / draft_tokens if draft_tokens else None
        length = 1 + accepted / drafts if drafts else None
        return cls(round(drafts, 1), round(draft_tokens, 1), round(accepted, 1), rate, length)


def _counts(tally: AcceptanceTally | ClassShare) -> tuple[float, float, float]:
    """(drafts, draft tokens, accepted tokens): a routed proposer counts them; a fixed method's
    class share has vLLM's per-position counts, whose first position counts the drafts."""
    if "draft_tokens" in tally:
        return tally["drafts"], tally["draft_tokens"], tally["accepted_tokens"]
    asked = tally["asked_per_position"]
    return (asked[0] if asked else 0.0), sum(asked), sum(tally["accepted_per_position"])


def _asked(tally: AcceptanceTally | ClassShare) -> float:
    """Steps that asked for a draft: the count every per-position count grows with."""
    return (tally["asked_per_position"] or [0])[0]


def _minus(total: list, before: list) -> list:
    size = max(len(total), len(before))
    return [t - b for t, b in zip(padded(total, size), padded(before, size))]


def add(acc: list, more: list) -> list:
    size = max(len(acc), len(more))
    return [a + m for a, m in zip(padded(acc, size), padded(more, size))]


@dataclass(kw_only=True)
class ClassEvidence:
    """One class's (or class and method's) acceptance: the estimate, the counts reported since
    it last took them in, and when it last grew."""

    estimate: AcceptanceEstimate = field(default_factory=AcceptanceEstimate)
    new_asked: list[float] = field(default_factory=list)
    new_accepted: list[float] = field(default_factory=list)
    seen_at: float | None = None

    def report(self, asked: list[float], accepted: list[float]) -> None:
        self.new_asked, self.new_accepted = add(self.new_asked, asked), add(self.new_accepted, accepted)

    def fold(self, config: TunerConfig, now: float) -> bool:
        """Take the counts reported since the last fold into the estimate; True when they showed
        a shift (and the estimate restarted)."""
        shifted = self.estimate.update(
            self.new_asked, self.new_accepted, config.memory_steps, config.min_drafts, config.shift_threshold
        )
        self.new_asked, self.new_accepted, self.seen_at = [], [], now
        return shifted

    def age_s(self, now: float) -> float | None:
        """Seconds since the estimate last grew; None before it ever did."""
        return None if self.seen_at is None else now - self.seen_at


class EnginePool:
    """The tuner's view of a pool whose engine runs one method at a fixed k."""

    def __init__(self, model: ModelConfig, pool: PoolConfig, config: TunerConfig):
        self.model, self.pool, self.config = model, pool, config
        self.method = pool.speculation.method
        self.k = (pool.speculation.num_speculative_tokens or 0) if self.method != NONE else 0
        self.classes: dict[str, ClassEvidence] = {}
        self.steps: deque[tuple[float, EngineStep]] = deque()
        self.rows = 1.0
        self.step_s: float | None = None  # median step seconds at about `rows`; None until enough were timed
        self.totals = ReplicaTotals()

    def ingest(self, replica: str, report: EngineReport, now: float) -> None:
        for tally in report["tallies"]:
            asked, accepted = self.totals.increments(replica, (tally["request_class"],), tally)
            self.classes.setdefault(tally["request_class"], ClassEvidence()).report(asked, accepted)
        self.steps.extend((now, s) for s in report["steps"])

    def update(self, now: float) -> None:
        while self.steps and self.steps[0][0] < now - self.config.cost_window_s:
            self.steps.popleft()
        recent = [s["rows"] for t, s in self.steps if t >= now - self.config.period_s]
        if recent:  # an idle pool keeps the batch size it last ran at
            self.rows = float(np.mean(recent))
        seconds = [s["seconds"] for s in near([s for _, s in self.steps], self.rows)]
        self.step_s = float(np.median(seconds)) if len(seconds) >= MIN_COST_SAMPLES else None
        for state in self.classes.values():
            if any(state.new_asked):
                state.fold(self.config, now)

    def option(self, request_class: str, now: float) -> Option:
        """What this pool gives one request of the class, as of the last `update`."""
        step_s = self.step_s
        evidence = {"rows": round(self.rows, 2), "step_s": step_s}
        tokens: float | None = 1.0
        age_s = None
        if self.k:
            state = self.classes.get(request_class)
            age_s = state.age_s(now) if state else None
            survival = state.estimate.survival(self.k, self.config.min_drafts) if state else None
            tokens = expected_tokens(survival, self.k) if survival else None
            evidence.update(drafts=state.estimate.drafts_seen() if state else 0, tokens_per_step=tokens)
        goodput = tokens / step_s if tokens is not None and step_s else None
        return Option(self.method, self.pool.name, self.k, goodput, evidence, age_s)
