"""What each engine step of this process's vLLM engine cost and, per request class, what its
drafts earned: the router's evidence for pools that run one fixed method (none, or an in-engine
drafter such as draft_model), whose workers the app cannot look into.

vLLM hands every step's scheduler stats to the app's stat logger (`autoscaling/engine_load.py`)
in the replica's own process, so this book costs no call into the engine. Steps are timed from
one report to the next while requests run. vLLM counts drafts per step, not per request; a
step's counts are split over the request classes running at that step, in proportion to their
requests (the target server keeps `active` up to date), which is exact whenever one class has
the pool to itself and a fair share otherwise.
"""

from __future__ import annotations

from collections import Counter, deque

from serve_app.contract import ClassShare, EngineReport, EngineStep

# A longer gap between two reports is the engine idling, not a step.
MAX_STEP_S = 2.0
MAX_SAMPLES = 4096


class EngineSteps:
    def __init__(self):
        self.active: Counter[str] = Counter()  # request class -> requests in this engine now
        # request class -> cumulative draft tokens asked and accepted per draft position
        self.asked: dict[str, list[float]] = {}
        self.accepted: dict[str, list[float]] = {}
        self.steps: deque[EngineStep] = deque(maxlen=MAX_SAMPLES)
        self._last: tuple[float, int] | None = None

    def started(self, request_class: str) -> None:
        self.active[request_class] += 1

    def finished(self, request_class: str) -> None:
        self.active[request_class] -= 1
        if self.active[request_class] <= 0:
            del self.active[request_class]

    def record(self, now: float, running: int, asked: list[int] | None, accepted: list[int] | None) -> None:
        """One engine step: `running` requests in its batch, and vLLM's per-position draft counts."""
        if self._last is not None and running and self._last[1] and now - self._last[0] < MAX_STEP_S:
            self.steps.append(EngineStep(rows=running, seconds=now - self._last[0]))
        self._last = (now, running)
        total = sum(self.active.values())
        if not (asked and any(asked) and total):
            return
        for request_class, n in self.active.items():
            share = n / total
            self.asked[request_class] = _added(self.asked.get(request_class, []), asked, share)
            self.accepted[request_class] = _added(self.accepted.get(request_class, []), accepted or [], share)

    def report(self) -> EngineReport:
        """Cumulative tallies per class and the step timings since the last report (drained)."""
        steps = list(self.steps)
        self.steps.clear()
        tallies = [
            ClassShare(
                request_class=c,
                asked_per_position=list(self.asked[c]),
                accepted_per_position=list(self.accepted.get(c, [])),
            )
            for c in self.asked
        ]
        return EngineReport(tallies=tallies, steps=steps)


def _added(total: list[float], counts: list[int], share: float) -> list[float]:
    size = max(len(total), len(counts))
    total = total + [0.0] * (size - len(total))
    return [t + share * (counts[i] if i < len(counts) else 0) for i, t in enumerate(total)]


# One engine per Serve replica process.
ENGINE_STEPS = EngineSteps()
