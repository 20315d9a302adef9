"""Methods mixed into every vLLM worker (`worker_extension_cls`), called with collective_rpc."""

from __future__ import annotations

from serve_app.proposer.remote_draft import DraftEndpoint, RemoteDraftClient


def _is_output_rank() -> bool:
    """vLLM takes the drafts of TP rank 0 of the last PP stage only (`take_draft_token_ids`)."""
    from vllm.distributed.parallel_state import get_pp_group, get_tp_group

    return get_tp_group().rank_in_group == 0 and get_pp_group().is_last_rank


class SpecControlExtension:
    def attach_routed_proposer(self, draft_endpoint: dict | None = None) -> bool:
        """Give the routed proposer this worker's model runner (batch rows -> requests) and, on the
        rank whose drafts count, a client of the draft worker."""
        drafter = getattr(self.model_runner, "drafter", None)
        if drafter is None or not hasattr(drafter, "attach"):
            return False
        remote = None
        if draft_endpoint is not None and _is_output_rank():
            remote = RemoteDraftClient.connect(DraftEndpoint(**draft_endpoint))
        drafter.attach(self.model_runner, remote)
        return True

    def routed_acceptance(self) -> list[dict]:
        """Cumulative drafts and acceptance per (request class, method) of the routed proposer."""
        return self.model_runner.drafter.book.snapshot()

    def step_timings(self) -> dict[str, list[dict]]:
        """Forward-pass and drafting times since the last read (see `StepTimer`)."""
        return self.model_runner.drafter.timer.drain()

    def set_tuned_k(self, tuned_k: list[tuple[str, str, int, float]]) -> None:
        """The spec tuner's (k, probe fraction) per (request class, method), used from the next step on."""
        self.model_runner.drafter.tuned_k = {(c, m): (k, probe) for c, m, k, probe in tuned_k}

    def remote_draft_stats(self) -> dict | None:
        """Draft worker calls since the start, and the latency observations since the last read."""
        remote = self.model_runner.drafter.remote
        return remote.stats.drain() if remote is not None else None
