"""The vLLM engine behind every engine replica (target pools and draft workers).

Ray Serve LLM starts every CPU engine with vLLM's multiprocessing executor, even with one rank:
the model runs in a worker process of its own and the engine core busy-waits on its answers
through shared memory at every step. On two cores that wait took most of the other core
(16 of 25 CPU seconds under load, and 0.4 s per 30 s of each idle engine's worker), which the
draft engines and Ray's own processes need. vLLM's own server runs a one-rank engine in one
process (`uni`); so does this app. Tensor-parallel CPU engines keep `mp` (one process per
rank), and GPU engines keep Ray's executor.
"""

from __future__ import annotations

from vllm.platforms import current_platform

from serve_app.ray_llm_seam import VLLMEngine

ONE_PROCESS_EXECUTOR = "uni"


def one_process_if_one_cpu_rank(vllm_config) -> None:
    parallel = vllm_config.parallel_config
    if current_platform.is_cpu() and parallel.world_size == 1:
        parallel.distributed_executor_backend = ONE_PROCESS_EXECUTOR


class AppEngine(VLLMEngine):
    def _start_async_llm_engine(self, vllm_engine_args, vllm_engine_config, placement_group):
        one_process_if_one_cpu_rank(vllm_engine_config)
        return super()._start_async_llm_engine(vllm_engine_args, vllm_engine_config, placement_group)
