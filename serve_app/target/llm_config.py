"""Translate a target pool of the app config into a Ray Serve LLM `LLMConfig`.

Ray Serve LLM already does the placement we want: on GPU one `{"GPU": 1}` bundle per TP
rank (with the accelerator type) and vLLM's Ray executor placing its workers there; on CPU
one `{"CPU": 1}` bundle per rank and vLLM's `mp` executor inside the replica.
"""

from __future__ import annotations

import re

from ray.serve.llm import LLMConfig

from serve_app.config.architecture import resolve_source
from serve_app.config.schema import WORKER_EXTENSION, ModelConfig, PoolConfig

# Small enough for a laptop; the test models need far less.
DEFAULT_CPU_KVCACHE_GIB = "1"


def deployment_name(model: ModelConfig, pool: PoolConfig) -> str:
    return f"target-{re.sub(r'[^A-Za-z0-9_-]+', '_', model.id)}-{pool.name}"


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


def _placement(model: ModelConfig) -> dict:
    acc = model.accelerator
    if acc.kind == "cpu":
        tp = model.tensor_parallel_size
        env = {"VLLM_CPU_KVCACHE_SPACE": DEFAULT_CPU_KVCACHE_GIB}
        if tp > 1:
            # vLLM's CPU backend needs one core bound per TP rank ("Not enough allowed NUMA nodes").
            env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(i) for i in range(tp))
        return {"accelerator_config": {"kind": "cpu"}, "runtime_env": {"env_vars": env}}
    return {
        "accelerator_type": acc.type,
        "placement_group_config": {"bundle_per_worker": {"GPU": 1}, "strategy": "STRICT_PACK"},
    }


def build_llm_config(model: ModelConfig, pool: PoolConfig) -> LLMConfig:
    scaling = pool.autoscaling
    return LLMConfig(
        model_loading_config={"model_id": model.id, "model_source": resolve_source(model.source)},
        engine_kwargs=_engine_kwargs(model, pool),
        deployment_config={
            "max_ongoing_requests": pool.max_ongoing_requests,
            "autoscaling_config": {
                "min_replicas": scaling.min_replicas,
                "initial_replicas": max(scaling.min_replicas, 1),
                "max_replicas": scaling.max_replicas,
                "target_ongoing_requests": scaling.target_ongoing_requests,
            },
        },
        log_engine_metrics=True,
        **_placement(model),
    )
