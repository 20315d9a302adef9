"""Methods mixed into every vLLM worker (`worker_extension_cls`), called with collective_rpc."""

from __future__ import annotations


class SpecControlExtension:
    def attach_routed_proposer(self) -> bool:
        """Give the routed proposer this worker's model runner (batch rows -> requests)."""
        drafter = getattr(self.model_runner, "drafter", None)
        if drafter is None or not hasattr(drafter, "attach"):
            return False
        drafter.attach(self.model_runner)
        return True

    def routed_acceptance(self) -> list[dict]:
        """Cumulative drafts and acceptance per (request class, method) of the routed proposer."""
        return self.model_runner.drafter.book.snapshot()
