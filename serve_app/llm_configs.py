"""The Ray Serve LLM `LLMConfig` of every engine deployment: target pools and draft workers.

Ray Serve LLM already does the placement we want: on GPU one `{"GPU": 1}` bundle per TP
rank (with the accelerator type) and vLLM's Ray executor placing its workers there; on CPU
one `{"CPU": 1}` bundle per rank and vLLM's `mp` executor inside the replica. A draft worker
gets its own engine, placement and autoscaling; prefix caching makes the full context that
targets send at every step cost only its new tokens.
"""

from __future__ import annotations

import re

from ray.serve.llm import LLMConfig

from serve_app.autoscaling.engine_load import APP_ENGINE_ENV
from serve_app.config.architecture import resolve_source
from serve_app.config.schema import (
    WORKER_EXTENSION,
    AcceleratorConfig,
    AutoscalingConfig,
    DraftWorkerConfig,
    ModelConfig,
    PoolConfig,
)

# Ray Serve's in-flight rule plus the engines' queue and TTFT (pools and draft workers alike).
ENGINE_LOAD_POLICY = "serve_app.autoscaling.policy:EngineLoadPolicy"

# Small enough for a laptop; the test models need far less.
DEFAULT_CPU_KVCACHE_GIB = "1"


def deployment_name(role: str, model: ModelConfig, name: str) -> str:
    """`target-<model>-<pool>` or `draft-<model>-<worker>`: Serve names allow no slashes."""
    return f"{role}-{re.sub(r'[^A-Za-z0-9_-]+', '_', model.id)}-{name}"


def _engine_kwargs(model: ModelConfig, pool: PoolConfig) -> dict:
    kwargs = {
        "dtype": model.dtype,
        "tensor_parallel_size": model.tensor_parallel_size,
        "max_model_len": model.max_model_len,
        "disable_log_stats": False,
    }
    if model.accelerator.kind == "gpu":
        kwargs["gpu_memory_utilization"] = model.gpu_memory_utilization
    spec = pool.speculation.vllm_config()
    if spec is not None:
        kwargs["speculative_config"] = spec
    if pool.speculation.method == "routed":
        kwargs["worker_extension_cls"] = WORKER_EXTENSION
    return {**kwargs, **model.engine_kwargs}


def engine_placement(
    acc: AcceleratorConfig, tensor_parallel_size: int, gpu_fraction: float = 1.0, cpu_cores: str | None = None
) -> dict:
    """LLMConfig fields that place one engine replica: its bundles, accelerator type and env."""
    # Marks the app's own engine processes, so the stat-logger plugin records in them alone.
    env = {APP_ENGINE_ENV: "1"}
    if acc.kind == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = DEFAULT_CPU_KVCACHE_GIB
        if cpu_cores is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_cores
        elif tensor_parallel_size > 1:
            # vLLM's CPU backend needs one core bound per TP rank ("Not enough allowed NUMA nodes").
            env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(i) for i in range(tensor_parallel_size))
        return {"accelerator_config": {"kind": "cpu"}, "runtime_env": {"env_vars": env}}
    # Ray Serve LLM reads a fractional GPU bundle and tells vLLM's Ray executor (VLLM_RAY_PER_WORKER_GPUS).
    return {
        "accelerator_type": acc.type,
        "placement_group_config": {"bundle_per_worker": {"GPU": gpu_fraction}, "strategy": "STRICT_PACK"},
        "runtime_env": {"env_vars": env},
    }


def deployment_config(scaling: AutoscalingConfig, max_ongoing_requests: int) -> dict:
    return {
        "max_ongoing_requests": max_ongoing_requests,
        "autoscaling_config": {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": max(scaling.min_replicas, 1),
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
            "policy": {
                "policy_function": ENGINE_LOAD_POLICY,
                "policy_kwargs": {
                    "ttft_slo_s": scaling.ttft_slo_s,
                    "max_waiting_requests": scaling.max_waiting_requests,
                },
            },
        },
    }


def build_llm_config(model: ModelConfig, pool: PoolConfig) -> LLMConfig:
    return LLMConfig(
        model_loading_config={"model_id": model.id, "model_source": resolve_source(model.source)},
        engine_kwargs=_engine_kwargs(model, pool),
        deployment_config=deployment_config(pool.autoscaling, pool.max_ongoing_requests),
        log_engine_metrics=True,
        **engine_placement(model.accelerator, model.tensor_parallel_size, cpu_cores=pool.cpu_cores),
    )


def build_draft_llm_config(model: ModelConfig, worker: DraftWorkerConfig) -> LLMConfig:
    engine_kwargs = {
        "dtype": worker.dtype or model.dtype,
        "max_model_len": model.draft_max_model_len(worker),
        "enable_prefix_caching": True,
        "disable_log_stats": False,
    }
    if worker.accelerator.kind == "gpu":
        engine_kwargs["gpu_memory_utilization"] = worker.gpu_memory_utilization
    return LLMConfig(
        model_loading_config={
            "model_id": f"{model.id}-draft-{worker.name}",
            "model_source": resolve_source(worker.source),
        },
        engine_kwargs={**engine_kwargs, **worker.engine_kwargs},
        deployment_config=deployment_config(worker.autoscaling, worker.max_ongoing_requests),
        log_engine_metrics=True,
        **engine_placement(worker.accelerator, 1, worker.gpu_fraction, worker.cpu_cores),
    )
