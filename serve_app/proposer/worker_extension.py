"""Methods mixed into every vLLM worker (`worker_extension_cls`), called with collective_rpc by
their names: `contract.SpecControl` declares them (not as a base class: vLLM adds this class to
the worker's bases and every attribute with it, and a Protocol brings its own); each hands the
call to the routed proposer."""

from __future__ import annotations

from serve_app.contract import AcceptanceTally, DraftCallReport, DraftEndpoint, StepTimings, TunedK
from serve_app.proposer.remote_draft import RemoteDraftClient


def _is_output_rank() -> bool:
    """vLLM takes the drafts of TP rank 0 of the last PP stage only (`take_draft_token_ids`)."""
    from vllm.distributed.parallel_state import get_pp_group, get_tp_group

    return get_tp_group().rank_in_group == 0 and get_pp_group().is_last_rank


class SpecControlExtension:
    def attach_routed_proposer(self, draft_endpoint: dict | None = None, local_draft: str | None = None) -> bool:
        """Give the routed proposer this worker's model runner (batch rows -> requests) and, on the
        rank whose drafts count, a client of the draft worker and the local draft model."""
        drafter = getattr(self.model_runner, "drafter", None)
        if drafter is None or not hasattr(drafter, "attach"):
            return False
        if not _is_output_rank():
            draft_endpoint = local_draft = None
        remote = RemoteDraftClient.connect(DraftEndpoint(**draft_endpoint)) if draft_endpoint else None
        drafter.attach(self.model_runner, remote, local_draft)
        return True

    def routed_acceptance(self) -> list[AcceptanceTally]:
        return self.model_runner.drafter.acceptance()

    def step_timings(self) -> StepTimings:
        return self.model_runner.drafter.timings()

    def set_tuned_k(self, tuned_k: list[TunedK]) -> None:
        self.model_runner.drafter.set_tuned_k(tuned_k)

    def remote_draft_stats(self) -> DraftCallReport | None:
        return self.model_runner.drafter.remote_stats()
