"""The draft worker replica: Ray Serve LLM's `LLMServer` hosting the draft model's vLLM engine.

Targets call `propose` once per engine step with every request that drafts remotely; the
contexts go into the engine together, so vLLM batches them, and its prefix cache turns the
resent context into a few new tokens of prefill.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
from ray.serve.llm import LLMServer
from vllm import SamplingParams
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind

from serve_app.autoscaling.engine_load import ReportsEngineLoad
from serve_app.engine import AppEngine
from serve_app.observability import metrics
from serve_app.vllm_seam import engine_client


class DraftServer(ReportsEngineLoad, LLMServer):
    _default_engine_cls = AppEngine

    async def propose(self, contexts: list[np.ndarray], ks: list[int]) -> list[list[int]]:
        """Greedy continuations of k tokens, one per context."""
        start = time.perf_counter()
        drafts = await asyncio.gather(*(self._draft(c, k) for c, k in zip(contexts, ks)))
        tags = {"model": self._llm_config.model_id}
        metrics.draft_worker_seconds().observe(time.perf_counter() - start, tags=tags)
        metrics.draft_worker_batch_size().observe(len(contexts), tags=tags)
        return drafts

    async def _draft(self, context: np.ndarray, k: int) -> list[int]:
        params = SamplingParams(
            max_tokens=k, temperature=0.0, ignore_eos=True, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY
        )
        final = None
        async for output in engine_client(self.engine).generate(
            TokensPrompt(prompt_token_ids=context.tolist()), params, request_id=uuid.uuid4().hex
        ):
            final = output
        return list(final.outputs[0].token_ids)
