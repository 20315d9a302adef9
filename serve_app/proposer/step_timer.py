"""How long engine steps take, measured where the drafts are made, for the tuner's cost model.

vLLM calls the proposer once per step, after the target's forward pass and sampling and
before the next step is scheduled (`custom_class` turns async scheduling off). So the time
from the end of one `propose` to the start of the next is one forward pass, which verified
the drafts proposed the step before, and `propose` itself is the drafting.
"""

from __future__ import annotations

import time
from collections import deque

from serve_app.contract import DraftSample, StepSample, StepTimings

MAX_SAMPLES = 4096
# A longer gap between steps is the engine idling, not a step.
MAX_STEP_S = 2.0


class StepTimer:
    def __init__(self):
        self.steps: deque[StepSample] = deque(maxlen=MAX_SAMPLES)
        self.drafts: deque[DraftSample] = deque(maxlen=MAX_SAMPLES)
        self._last_end: float | None = None
        self._last_req_ids: frozenset[str] = frozenset()

    def drafted(self, method: str, rows: int, k: int, seconds: float) -> None:
        self.drafts.append(DraftSample(method=method, rows=rows, k=k, seconds=seconds))

    def step_done(self, req_ids: list[str], sampled: list[list[int]], verified_tokens: int, forward_end: float) -> None:
        """Record the forward pass that ended at `forward_end`, unless it also prefilled: a request
        new to the batch, or one still in chunked prefill (nothing sampled), makes a different step."""
        if (
            self._last_end is not None
            and forward_end - self._last_end < MAX_STEP_S
            and all(tokens for tokens in sampled)
            and self._last_req_ids.issuperset(req_ids)
        ):
            self.steps.append(
                StepSample(rows=len(req_ids), verified_tokens=verified_tokens, forward_s=forward_end - self._last_end)
            )
        self._last_req_ids = frozenset(req_ids)
        self._last_end = time.perf_counter()

    def drain(self) -> StepTimings:
        snapshot = StepTimings(steps=list(self.steps), drafts=list(self.drafts))
        self.steps.clear()
        self.drafts.clear()
        return snapshot
