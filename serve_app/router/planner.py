"""Which speculation method (and k) each request class gets, from the evidence that decides speed.

For every method a class allows, and for none, the spec tuner works out the expected tokens per
second one request gets: expected tokens per verify step for that class and method (acceptance
per draft position) over the seconds of a step on the pool that would serve it, at that pool's
current batch size (`tuner/goodput.py`, the same arithmetic that picks k). This module turns
those figures into a decision per class:

- the method with the most goodput wins, but the current choice holds unless another beats it by
  `switch_margin` (noise around a tie must not flip it), and a method without evidence yet (too
  few drafts, no step timed) is never chosen: thin evidence does not move the choice;
- a bounded share of the class (`explore_share`) flows to its other methods whose evidence is
  missing or older than `explore_after_s`, until it is fresh again, so a method that starts to
  pay is seen; a method measured recently gets none (every exploring request to a method that
  loses costs the class, and at one request at a time that was 4-5% of the class's time), and
  nor does none, whose figure is the pool's step cost, not something the class must teach.

Under load the step cost grows with every verified token, so goodput itself moves the choice to
fewer draft tokens (the tuner's k) and then to none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

NONE = "none"


@dataclass(frozen=True)
class Option:
    """What one method would give a class: k, expected tokens/s of one request (None: too little
    seen to say), and the evidence behind it."""

    method: str
    pool: str
    k: int
    goodput: float | None
    evidence: dict = field(default_factory=dict)
    # Seconds since the class's evidence for this method last grew; None where the figure needs
    # none of the class's own traffic (none: the pool's step cost).
    age_s: float | None = None


@dataclass(frozen=True)
class ClassPlan:
    method: str
    reason: str  # goodput: the evidence chose it | default: no method has evidence to beat the default
    explore: dict[str, float]  # method -> share of the class's requests sent there to keep evidence fresh
    options: dict[str, Option]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "k": self.options[self.method].k if self.method in self.options else None,
            "reason": self.reason,
            "explore": self.explore,
            "options": {m: asdict(o) for m, o in self.options.items()},
        }


def candidates(methods: list[str]) -> list[str]:
    """A class's methods and none: speculation must always be able to lose to plain decoding."""
    return list(dict.fromkeys([*methods, NONE]))


def plan_class(
    default: str,
    options: dict[str, Option],
    current: str | None,
    switch_margin: float,
    explore_share: float,
    explore_after_s: float,
) -> ClassPlan:
    held = current if current in options else default
    known = {m: o.goodput for m, o in options.items() if o.goodput is not None}
    method, reason = held, "default"
    if held in known:
        best = max(known, key=known.get)
        method = best if known[best] > known[held] * (1 + switch_margin) else held
        reason = "goodput"
    due = [
        m
        for m, o in options.items()
        if m != method and (o.goodput is None or (o.age_s is not None and o.age_s > explore_after_s))
    ]
    explore = {m: explore_share / len(due) for m in due}
    return ClassPlan(method, reason, explore, options)
