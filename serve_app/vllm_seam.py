"""The one place this project reaches into engine internals that vLLM and Ray Serve LLM do not
publish (the ingress's reach into Ray Serve LLM is `ray_llm_seam.py`): what the routed
proposer reads from vLLM's model runner, how it builds vLLM's n-gram lookup, the OpenMP
binding vLLM gives a CPU worker, and how the draft worker gets at the engine client behind
Ray's `LLMServer`. `tests/test_vllm_seam.py` pins each
against the installed versions, so an upgrade that moves one fails there, not at run time.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import SimpleNamespace
from typing import TYPE_CHECKING

from vllm.config import VllmConfig
from vllm.utils.ompmultiprocessing import OMPProcessManager
from vllm.utils.system_utils import set_env_var  # noqa: F401  (vLLM's own set-and-restore of one variable)

if TYPE_CHECKING:
    from vllm.v1.spec_decode.ngram_proposer import NgramProposer


def one_worker_omp_env(vllm_config: VllmConfig) -> AbstractContextManager:
    """The OpenMP environment (thread count, affinity) vLLM's multiprocessing executor sets while it
    starts its CPU worker of rank 0, set in this process for as long as the block runs."""
    return OMPProcessManager(vllm_config).configure_omp_envs(rank=0, local_rank=0)


def ngram_lookup(vllm_config: VllmConfig, lookup_min: int, lookup_max: int, k_max: int) -> NgramProposer:
    """vLLM's batched prompt lookup for a `custom_class` proposer, whose speculative config
    leaves the lookup sizes unset; NgramProposer reads only these fields."""
    # Imported here, not at the top: it loads numba, and a process that has loaded numba cannot
    # start an in-process vLLM engine (vLLM's CPU kernel rebinding walks every loaded module and
    # trips on llvmlite's library wrapper), as the engine_memory benchmark does after importing
    # serve_app.engine.
    from vllm.v1.spec_decode.ngram_proposer import NgramProposer

    return NgramProposer(
        SimpleNamespace(
            speculative_config=SimpleNamespace(
                prompt_lookup_min=lookup_min, prompt_lookup_max=lookup_max, num_speculative_tokens=k_max
            ),
            model_config=vllm_config.model_config,
            scheduler_config=vllm_config.scheduler_config,
            parallel_config=vllm_config.parallel_config,
        )
    )


def scheduled_request_ids(runner, rows: int) -> list[str]:
    """The ids of the model runner's first `rows` batch rows, in the order of the step's tokens."""
    return list(runner.input_batch.req_ids[:rows])


def request_extra_args(runner, req_id: str) -> dict | None:
    """The `extra_args` of a scheduled request's sampling parameters (where the ingress put its
    request spec); None for a request the runner does not hold."""
    state = runner.requests.get(req_id)
    return state.sampling_params.extra_args if state is not None and state.sampling_params else None


def engine_client(engine):
    """The vLLM engine client inside Ray Serve LLM's engine wrapper: LLMServer exposes only
    OpenAI-shaped calls, and the draft worker needs token ids in and out."""
    return engine._engine_client
