"""The target side of a separately placed draft worker: one batched call per engine step.

Runs inside a vLLM worker process, which is not a Ray Serve replica: it joins the Ray cluster
as a driver and calls the draft deployment through a Serve handle. Every failure mode ends
in "no drafts this step" (plain decoding), never in an error: a call past the deadline is
cancelled, and after any failure the pool is left alone for `retry_after_s` so a dead or
overloaded pool does not cost the deadline at every step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from serve_app.contract import DraftCallReport, DraftEndpoint

logger = logging.getLogger(__name__)

# How long a target's start waits for its first answer from the draft worker, which starts
# alongside it; past that the target serves anyway and drafts once the worker answers.
WARM_UP_TIMEOUT_S = 300.0


@dataclass
class DraftCallStats:
    calls: int = 0
    rows: int = 0
    wait_s: float = 0.0
    # Steps whose remote rows got no drafts, by why.
    timeouts: int = 0
    errors: int = 0
    unavailable: int = 0
    # (seconds waited, batch size) per call since the last drain.
    observations: list[tuple[float, int]] = field(default_factory=list)

    def drain(self) -> DraftCallReport:
        snapshot = asdict(self)
        self.observations = []
        return snapshot


class RemoteDraftClient:
    def __init__(self, endpoint: DraftEndpoint, handle):
        self.endpoint = endpoint
        self.stats = DraftCallStats()
        self._handle = handle
        self._retry_at = 0.0

    @classmethod
    def connect(cls, endpoint: DraftEndpoint) -> RemoteDraftClient:
        import ray
        from ray import serve

        if not ray.is_initialized():  # vLLM's Ray executor workers (GPU) are in the cluster already
            ray.init(address=endpoint.gcs_address, namespace="serve", log_to_driver=False, configure_logging=False)
        client = cls(endpoint, serve.get_deployment_handle(endpoint.deployment, endpoint.app_name))
        client.warm_up(WARM_UP_TIMEOUT_S)
        return client

    def warm_up(self, timeout_s: float) -> bool:
        """One call before serving: a handle's first call waits for it to learn the draft replicas,
        which is longer than a step's deadline, so the first request would otherwise decode plainly."""
        start = time.monotonic()
        response = self._handle.propose.remote([np.zeros(1, dtype=np.int64)], [1])
        try:
            response.result(timeout_s=timeout_s)
            logger.info(
                "draft worker %s answered its first call in %.2f s", self.endpoint.deployment, time.monotonic() - start
            )
            return True
        except Exception:
            response.cancel()
            logger.warning(
                "draft worker %s did not answer within %.0f s of the target's start; drafting starts when it does",
                self.endpoint.deployment,
                timeout_s,
                exc_info=True,
            )
            return False

    def propose(self, contexts: list[np.ndarray], ks: list[int]) -> list[list[int]] | None:
        """k draft tokens per context, or None when the pool cannot answer within the deadline."""
        start = time.monotonic()
        if start < self._retry_at:
            self.stats.unavailable += 1
            return None
        response = self._handle.propose.remote(contexts, ks)
        try:
            drafts = response.result(timeout_s=self.endpoint.deadline_s)
        except TimeoutError:
            response.cancel()
            self._fail("timeouts", start)
            return None
        except Exception:
            logger.warning(
                "draft worker %s failed; decoding without it for %.1f s",
                self.endpoint.deployment,
                self.endpoint.retry_after_s,
                exc_info=True,
            )
            self._fail("errors", start)
            return None
        wait_s = time.monotonic() - start
        self.stats.calls += 1
        self.stats.rows += len(contexts)
        self.stats.wait_s += wait_s
        self.stats.observations.append((wait_s, len(contexts)))
        return drafts

    def _fail(self, reason: str, start: float) -> None:
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)
        self._retry_at = start + self.endpoint.retry_after_s
