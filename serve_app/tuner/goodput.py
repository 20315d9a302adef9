"""The spec tuner's arithmetic: which k gives a request the most tokens per second of target time.

A verify step of a request drafted k tokens ahead yields 1 + sum over p < k of P(the first
p+1 drafts are all accepted) tokens (Leviathan et al. 2023, with acceptance measured per
position rather than assumed equal), and costs one forward pass over the batch's rows and
draft tokens plus the drafting. k = 0 costs a plain step and yields one token, so it wins by
itself whenever acceptance is under break-even.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from serve_app.contract import DraftSample, EngineStep, StepSample

# Anything timed at a batch size: a forward pass, a drafting call, an engine step.
Sample = TypeVar("Sample", StepSample, DraftSample, EngineStep)

# Fewer samples than this and a cost fit is a guess; the tuner then keeps k where it is.
MIN_COST_SAMPLES = 20
# A median over fewer samples is one sample's noise.
MIN_PER_GROUP = 5
MAX_GROUPS = 16
# Costs are fit among samples of about the current size (rows within this factor): a step's and a
# drafting call's seconds grow with the rows as well as with k, and one line through every batch
# size mixes the two (at 16 rows a remote draft call's fixed cost read as 1 ms, from 1-row calls).
NEAR_ROWS = 2.0


# The recent estimate remembers this share of the long one's steps: about one period of traffic.
RECENT_MEMORY_SHARE = 0.2


@dataclass
class AcceptanceEstimate:
    """Per draft position, steps that asked for a draft token there and drafts accepted through
    it, forgotten exponentially by evidence, not by time: each newer step that asked forgets
    1/`memory_steps` of the past. A period of a few requests then moves the estimate little (one
    request's drafts can all fail at the third token), and a busy one moves it fast.

    A recent estimate with a fifth of that memory runs beside it. When the two disagree on the
    first position by more than a shift threshold, the workload has changed (sampling instead of
    greedy, another kind of prompt) and the estimate restarts from the newest period alone (from
    the recent estimate if that period is too small to judge by): a new regime is followed within
    a period or two, while noise within a regime, which the long memory averages, moves it
    little. Restarting from the recent estimate alone would keep the old regime's deeper
    positions, whose conditional acceptance then stretches the new first-position rate far out."""

    asked: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    recent_asked: list[float] = field(default_factory=list)
    recent_accepted: list[float] = field(default_factory=list)

    def update(
        self,
        asked: list[int],
        accepted: list[int],
        memory_steps: float,
        min_drafts: float = 1.0,
        shift_threshold: float = 1.0,
    ) -> bool:
        """Fold in a period's counts; True when they showed a shift (and the estimate restarted)."""
        self.asked, self.accepted = _forget(self.asked, self.accepted, asked, accepted, memory_steps)
        self.recent_asked, self.recent_accepted = _forget(
            self.recent_asked, self.recent_accepted, asked, accepted, memory_steps * RECENT_MEMORY_SHARE
        )
        if not (self.recent_asked and self.recent_asked[0] >= min_drafts and self.asked[0] > 0):
            return False
        recent = self.recent_accepted[0] / self.recent_asked[0]
        if abs(recent - self.accepted[0] / self.asked[0]) <= shift_threshold:
            return False
        if asked and asked[0] >= min_drafts:
            self.asked, self.accepted = [float(p) for p in asked], [float(a) for a in accepted]
        else:
            self.asked, self.accepted = list(self.recent_asked), list(self.recent_accepted)
        self.recent_asked, self.recent_accepted = list(self.asked), list(self.accepted)
        return True

    def drafts_seen(self) -> float:
        """Steps (remembered, after forgetting) that asked for a first draft token: the evidence size."""
        return round(self.asked[0], 1) if self.asked else 0

    def survival(self, k_max: int, min_drafts: float) -> list[float] | None:
        """P(the first p+1 drafts are accepted) for p < k_max; None before `min_drafts` reached the
        first position. Beyond the deepest position with `min_drafts`, each further position keeps
        the last measured conditional acceptance (the geometric tail of the i.i.d. model)."""
        depth = next((i for i, p in enumerate(self.asked) if p < min_drafts), len(self.asked))
        if depth == 0:
            return None
        measured = [self.accepted[i] / self.asked[i] for i in range(depth)]
        rate = measured[-1] / measured[-2] if depth >= 2 and measured[-2] > 0 else measured[-1]
        rate = min(rate, 1.0)
        out = measured[:k_max]
        while len(out) < k_max:
            out.append(out[-1] * rate)
        return out


def _forget(
    asked: list[float], accepted: list[float], new_asked: list[int], new_accepted: list[int], memory_steps: float
) -> tuple[list[float], list[float]]:
    size = max(len(asked), len(new_asked))
    old_p, old_a = padded(asked, size), padded(accepted, size)
    new_p, new_a = padded(new_asked, size), padded(new_accepted, size)
    keep = math.exp(-new_p[0] / memory_steps) if size else 1.0
    return [keep * o + n for o, n in zip(old_p, new_p)], [keep * o + n for o, n in zip(old_a, new_a)]


def padded(values: list, size: int) -> list:
    """`values` with zeros appended up to `size`: per-position counts of different depths, aligned."""
    return list(values) + [0] * (size - len(values))


def expected_tokens(survival: list[float], k: int) -> float:
    return 1.0 + sum(survival[:k])


@dataclass(frozen=True)
class StepCost:
    """Seconds of one engine step: a forward pass of `base_s + per_token_s * tokens` (the rows'
    own tokens plus draft tokens to verify), and per method a drafting call of `fixed_s + per_k_s * k`.

    Every row of the batch waits for a drafting call, not only the rows it drafts for, so a call is
    charged `waiting[method]` times: the batch's rows per row the call drafted for. One request's
    own step time does not show that: with a draft model drafting for one chat row in a batch of
    sixteen prompt-lookup rows, the chat row's goodput looked best while the batch's fell."""

    base_s: float
    per_token_s: float
    drafting: dict[str, tuple[float, float]]
    waiting: dict[str, float] = field(default_factory=dict)

    def seconds(self, rows: float, method: str, k: int) -> float:
        forward = self.base_s + self.per_token_s * rows * (1 + k)
        if k == 0:
            return forward
        fixed_s, per_k_s = self.drafting[method]
        return forward + (fixed_s + per_k_s * k) * self.waiting.get(method, 1.0)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Intercept and non-negative slope through the median y of each x value (of each quantile bin
    of x when it takes many values): medians, because stalls and co-tenants on a shared host move
    means. None without two x values to draw a line through: a guessed slope is how k runs away."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    values = np.unique(x)
    if len(values) <= MAX_GROUPS:
        groups = [np.flatnonzero(x == v) for v in values]
    else:
        groups = np.array_split(np.arange(len(x)), MAX_GROUPS)
    points = np.array([(np.median(x[g]), np.median(y[g]), len(g)) for g in groups if len(g) >= MIN_PER_GROUP])
    if len(points) < 2 or np.ptp(points[:, 0]) == 0:
        return None
    xs, ys, w = points.T
    mx, my = np.average(xs, weights=w), np.average(ys, weights=w)
    slope = max(0.0, float(np.sum(w * (xs - mx) * (ys - my)) / np.sum(w * (xs - mx) ** 2)))
    intercept = my - slope * mx
    if intercept < 0:  # no step costs less than nothing: a line through the origin instead
        slope, intercept = float(np.sum(w * xs * ys) / np.sum(w * xs * xs)), 0.0
    return float(intercept), slope


def near_rows(rows: float, at: float) -> bool:
    """Whether a batch of `rows` rows is about the size `at`, within a factor of NEAR_ROWS."""
    return at / NEAR_ROWS <= rows <= at * NEAR_ROWS


def near(samples: list[Sample], rows: float) -> list[Sample]:
    """The samples taken at about `rows` rows."""
    return [s for s in samples if near_rows(s["rows"], rows)]


def fit_step_cost(
    steps: list[StepSample], drafts: list[DraftSample], rows: float, draft_rows: dict[str, float]
) -> StepCost | None:
    """Fit `StepCost` to a `StepTimer`'s samples around the current load: forward passes of about
    `rows` rows, and per method drafting calls of about `draft_rows[method]` rows, each charged to
    the `rows` rows that wait for it. None until the
    forward passes seen there verified at least two different numbers of tokens. A method is left
    out of `drafting` until it was seen drafting there at two different k."""
    steps = near(steps, rows)
    if len(steps) < MIN_COST_SAMPLES:
        return None
    tokens = np.array([s["rows"] + s["verified_tokens"] for s in steps], dtype=float)
    forward = _line(tokens, np.array([s["forward_s"] for s in steps]))
    if forward is None:
        return None
    drafting, waiting = {}, {}
    for method, size in draft_rows.items():
        mine = [d for d in near(drafts, size) if d["method"] == method]
        line = _line(np.array([d["k"] for d in mine], dtype=float), np.array([d["seconds"] for d in mine]))
        if line is not None:
            drafting[method] = line
            waiting[method] = max(1.0, rows / size)
    return StepCost(*forward, drafting, waiting)


@dataclass(frozen=True)
class KChoice:
    k: int
    goodput: dict[int, float]  # k -> expected tokens per second of one request


def choose_k(
    survival: list[float],
    cost: StepCost,
    rows: float,
    method: str,
    k_min: int,
    k_max: int,
    current: int | None,
    margin: float,
    previous: dict[int, float] | None = None,
    smoothing: float = 1.0,
) -> KChoice:
    """The k in [k_min, k_max] with the most expected tokens per second. The last choice's goodput
    (`previous`) is blended in at weight 1 - `smoothing`, so one noisy cost fit cannot move k, and
    a change away from `current` must gain more than `margin`, so noise around a boundary cannot flip it."""
    goodput = {k: expected_tokens(survival, k) / cost.seconds(rows, method, k) for k in range(k_min, k_max + 1)}
    if previous:
        goodput = {k: smoothing * g + (1 - smoothing) * previous.get(k, g) for k, g in goodput.items()}
    best = max(goodput, key=goodput.get)
    if current in goodput and goodput[best] <= goodput[current] * (1 + margin):
        best = current
    return KChoice(best, goodput)
