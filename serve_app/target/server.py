"""The target pool replica: Ray Serve LLM's `LLMServer` hosting a vLLM `AsyncLLM`."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.llm import LLMConfig, LLMServer

from serve_app.autoscaling.engine_load import ENGINE_LOAD, ReportsEngineLoad
from serve_app.config.schema import DraftWorkerConfig, TunerConfig
from serve_app.contract import (
    ACCEPTANCE_RPC,
    ATTACH_RPC,
    DRAFT_STATS_RPC,
    SET_K_RPC,
    TIMINGS_RPC,
    AcceptanceTally,
    DraftCallReport,
    DraftEndpoint,
    RoutedReport,
    StepTimings,
    TunedK,
    TunerAnswer,
)
from serve_app.engine import AppEngine
from serve_app.observability import metrics
from serve_app.observability.engine_steps import ENGINE_STEPS
from serve_app.proposer.request_spec import CLASS_KEY, DEFAULT_CLASS

logger = logging.getLogger(__name__)

# Ray's metrics agent drops a gauge not set again within two report intervals (10 s each by
# default), so the info gauge is re-set well inside that; acceptance is read at the same pace.
PUBLISH_PERIOD_S = 5.0


class TargetServer(ReportsEngineLoad, LLMServer):
    """`LLMServer` that also says which pool it serves, and for a routed pool, how each request
    class and method fares.

    vLLM's own metrics (exported through Ray) carry only `model_name` and `ReplicaId`; every
    pool of a model shares the model name, so each replica publishes an info gauge mapping its
    ReplicaId to its pool and speculation method (join on ReplicaId in PromQL).
    """

    _default_engine_cls = AppEngine

    async def __init__(
        self,
        llm_config: LLMConfig,
        *,
        pool: str,
        method: str,
        draft_worker: DeploymentHandle | None = None,
        draft_config: DraftWorkerConfig | None = None,
        tuner: DeploymentHandle | None = None,
        tuner_config: TunerConfig | None = None,
        local_draft: str | None = None,
    ):
        await super().__init__(llm_config)
        self._routed = method == "routed"
        self._remote = draft_worker is not None
        if self._routed:
            # The routed proposer drafts nothing until it can map batch rows to requests.
            endpoint = None
            if draft_worker is not None:
                endpoint = asdict(
                    DraftEndpoint(
                        gcs_address=ray.get_runtime_context().gcs_address,
                        app_name=draft_worker.app_name,
                        deployment=draft_worker.deployment_name,
                        deadline_s=draft_config.deadline_ms / 1000,
                        retry_after_s=draft_config.retry_after_s,
                    )
                )
            attached = await self.collective_rpc(
                ATTACH_RPC, kwargs={"draft_endpoint": endpoint, "local_draft": local_draft}
            )
            if not all(attached):
                raise RuntimeError(f"pool {pool}: the routed proposer did not attach in every worker: {attached}")
        replica = serve.get_replica_context().replica_id.unique_id
        self._tags = {"model": llm_config.model_id, "pool": pool}
        self._info_tags = {**self._tags, "method": method, "ReplicaId": replica}
        self._exported: dict[tuple, float] = {}
        self._observer = asyncio.get_running_loop().create_task(
            self._observe(tuner, tuner_config.period_s if tuner is not None else None)
        )

    async def _run_request(self, request, **kwargs):
        """Count the request's class as running in this engine until its stream ends."""
        request_class = str((getattr(request, "vllm_xargs", None) or {}).get(CLASS_KEY, DEFAULT_CLASS))
        stream = await super()._run_request(request, **kwargs)

        async def tracked():
            ENGINE_STEPS.started(request_class)  # here, so that `finished` always follows it
            try:
                async for chunk in stream:
                    yield chunk
            finally:
                ENGINE_STEPS.finished(request_class)

        return tracked()

    async def routed_acceptance(self) -> list[AcceptanceTally]:
        """Cumulative drafts and acceptance per (request class, method) on this replica."""
        if not self._routed:
            return []
        return (await self.collective_rpc(ACCEPTANCE_RPC))[0]  # rank 0's drafts are the ones vLLM uses

    async def _observe(self, tuner: DeploymentHandle | None, tuner_period_s: float | None) -> None:
        """Publish the pool identity and the routed proposer's books, and report to the spec tuner.

        One loop reads the books for both, because each read waits for a gap between engine steps.
        It reads them only after engine steps ran: each `collective_rpc` wakes the vLLM workers,
        whose message queue then spins for a second, which kept half a core busy in an idle app.
        """
        period_s = min(PUBLISH_PERIOD_S, tuner_period_s or PUBLISH_PERIOD_S)
        next_report = time.monotonic() + (tuner_period_s or 0)
        applied: list[TunedK] = []
        tallies: list[AcceptanceTally] = []
        books_at = timings_at = -1  # the engine's step count when each was last read
        while True:
            metrics.replica_info().set(1, tags=self._info_tags)
            if self._routed and ENGINE_LOAD.steps != books_at:
                books_at = ENGINE_LOAD.steps
                try:
                    tallies = await self.routed_acceptance()
                    self._export_acceptance(tallies)
                    if self._remote:
                        # Only the rank whose drafts vLLM uses calls the draft worker; the others answer None.
                        stats = await self.collective_rpc(DRAFT_STATS_RPC)
                        self._export_draft_stats(next(s for s in stats if s is not None))
                except Exception:  # metrics must never take the replica down
                    logger.exception("reading the routed proposer's statistics failed")
            if tuner is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + tuner_period_s
                stepped, timings_at = ENGINE_LOAD.steps != timings_at, ENGINE_LOAD.steps
                try:
                    if self._routed:
                        applied = await self._report(tuner, tallies, applied, stepped)
                    elif stepped:  # a pool of one fixed method: the router's evidence, from this process
                        await tuner.report_engine.remote(
                            self._tags["model"], self._tags["pool"], self._info_tags["ReplicaId"], ENGINE_STEPS.report()
                        )
                except Exception:  # without the tuner, requests keep the k they came with
                    logger.exception("reporting to the spec tuner failed")
            await asyncio.sleep(period_s)

    async def _report(
        self, tuner: DeploymentHandle, tallies: list[AcceptanceTally], applied: list[TunedK], stepped: bool
    ) -> list[TunedK]:
        """Send the books and step timings to the spec tuner and apply the k table it answers,
        without restarting anything; returns the table now applied. An idle replica still
        reports (a pinned k must reach it before its next request) but touches no worker."""
        timings: StepTimings = (await self.collective_rpc(TIMINGS_RPC))[0] if stepped else {"steps": [], "drafts": []}
        report = RoutedReport(tallies=tallies, applied=applied, **timings)
        replica = self._info_tags["ReplicaId"]
        answer: TunerAnswer = await tuner.report.remote(self._tags["model"], self._tags["pool"], replica, report)
        if answer["tuned_k"] != applied:
            await self.collective_rpc(SET_K_RPC, args=(answer["tuned_k"],))
        return answer["tuned_k"]

    def _export_acceptance(self, tallies: list[AcceptanceTally]) -> None:
        counters, per_position = metrics.class_spec_counters(), metrics.class_accepted_per_position()
        for tally in tallies:
            pair = (tally["request_class"], tally["method"])
            tags = {**self._tags, "request_class": pair[0], "method": pair[1]}
            for key, counter in counters.items():
                self._increment(counter, (pair, key), tally[key], tags)
            for pos, total in enumerate(tally["accepted_per_position"]):
                self._increment(per_position, (pair, pos), total, {**tags, "position": str(pos)})

    def _export_draft_stats(self, stats: DraftCallReport) -> None:
        """Totals since the start; the latency observations since the last read, which drained them."""
        for key, counter in metrics.draft_totals().items():
            self._increment(counter, ("draft", key), stats[key], self._tags)
        for reason in ("timeouts", "errors", "unavailable"):
            self._increment(
                metrics.draft_fallbacks(), ("draft", reason), stats[reason], {**self._tags, "reason": reason}
            )
        for wait_s, batch in stats["observations"]:
            metrics.draft_wait_seconds().observe(wait_s, tags=self._tags)
            metrics.draft_batch_size().observe(batch, tags=self._tags)

    def _increment(self, counter, key: tuple, total: float, tags: dict[str, str]) -> None:
        """Ray counters only go up by increments: export what grew since the last reading."""
        delta = total - self._exported.get(key, 0)
        if delta > 0:
            counter.inc(delta, tags=tags)
            self._exported[key] = total
