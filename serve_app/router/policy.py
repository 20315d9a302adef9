"""Which speculation method a request class gets.

The static policy returns the class's configured default. The learned policy is an
epsilon-greedy bandit per class over the methods the class allows, plus "none": the reward is
the decode rate a request saw (completion tokens per second after its first token), which is
what speculation is for, so a method whose acceptance falls below break-even loses to "none"
on its own numbers. Exploration decays per decision down to a floor and goes to the method with
the fewest rewards, so evidence builds where it is thinnest. The class default holds until
another method has `min_samples` rewards and a reward (EWMA) `switch_margin` above the default's: one
request's rate moves with the load and its length far more than with the method, and a bandit
that trusted one sample sent code edits to "none" after a single slow request. Both policies
drop to "none" when the target pools are loaded past the configured in-flight threshold.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from serve_app.config.schema import RouterConfig

NONE = "none"


@dataclass(frozen=True)
class Choice:
    method: str
    reason: str  # static | explore | exploit | high_load


@dataclass
class _Arm:
    reward: float | None = None
    pulls: int = 0


@dataclass
class _ClassState:
    arms: dict[str, _Arm]
    epsilon: float
    decisions: int = 0


@dataclass
class Policy:
    config: RouterConfig
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def __post_init__(self) -> None:
        self._state = {
            c.name: _ClassState({m: _Arm() for m in dict.fromkeys([*c.methods, NONE])}, self.config.exploration)
            for c in self.config.classes
        }

    def choose(self, request_class: str, in_flight_per_replica: float) -> Choice:
        if in_flight_per_replica > self.config.high_load_in_flight:
            return Choice(NONE, "high_load")
        default = self.config.request_class(request_class).default
        if self.config.policy == "static":
            return Choice(default, "static")
        state = self._state[request_class]
        state.decisions += 1
        epsilon = state.epsilon
        state.epsilon = max(self.config.min_exploration, epsilon * self.config.exploration_decay)
        untried = [m for m, arm in state.arms.items() if arm.reward is None]
        if untried:
            return Choice(default if default in untried else untried[0], "explore")
        if self.rng.random() < epsilon:
            fewest = min(arm.pulls for arm in state.arms.values())
            return Choice(self.rng.choice(sorted(m for m, arm in state.arms.items() if arm.pulls == fewest)),
                          "explore")
        return Choice(self._best(state, default), "exploit")

    def _best(self, state: _ClassState, default: str) -> str:
        bar = state.arms[default].reward * (1 + self.config.switch_margin)
        proven = {m: arm.reward for m, arm in state.arms.items()
                  if m != default and arm.pulls >= self.config.min_samples and arm.reward > bar}
        return max(proven, key=proven.get) if proven else default

    def observe(self, request_class: str, method: str, decode_tokens_per_s: float) -> None:
        arm = self._state[request_class].arms.get(method)
        if arm is None:
            return
        alpha = self.config.reward_smoothing
        arm.reward = decode_tokens_per_s if arm.reward is None else (1 - alpha) * arm.reward + alpha * decode_tokens_per_s
        arm.pulls += 1

    def estimates(self, request_class: str) -> dict[str, float | None]:
        return {m: arm.reward for m, arm in self._state[request_class].arms.items()}
