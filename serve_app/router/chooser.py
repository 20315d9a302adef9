"""Which speculation method a request class gets, decided in the ingress from a table.

The static policy returns the class's configured default. The goodput policy follows the route
table the spec tuner plans from measured acceptance and step costs (`planner.py`): the class's
method, except for the table's small exploration shares, which go to the class's other methods.
Until the first table arrives, a class gets its default. Both policies drop to "none" when the
target pools are loaded past the configured in-flight threshold.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from serve_app.config.schema import RouterConfig
from serve_app.contract import ClassRoute
from serve_app.router.planner import NONE


@dataclass(frozen=True)
class Choice:
    method: str
    reason: str  # static | default | goodput | explore | high_load


@dataclass
class Policy:
    config: RouterConfig
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # request class -> its route, from the spec tuner's route table
    table: dict[str, ClassRoute] = field(default_factory=dict)

    def choose(self, request_class: str, in_flight_per_replica: float) -> Choice:
        if in_flight_per_replica > self.config.high_load_in_flight:
            return Choice(NONE, "high_load")
        default = self.config.request_class(request_class).default
        if self.config.policy == "static":
            return Choice(default, "static")
        plan = self.table.get(request_class)
        if plan is None:
            return Choice(default, "default")
        draw = self.rng.random()
        for method, share in sorted(plan["explore"].items()):
            if draw < share:
                return Choice(method, "explore")
            draw -= share
        return Choice(plan["method"], "goodput")
