"""Translate a draft worker of the app config into a Ray Serve LLM `LLMConfig`.

The draft model gets its own engine, placement and autoscaling; prefix caching makes the
full context that targets send at every step cost only its new tokens.
"""

from __future__ import annotations

from ray.serve.llm import LLMConfig

from serve_app.config.architecture import resolve_source
from serve_app.config.schema import DraftWorkerConfig, ModelConfig
from serve_app.target.llm_config import deployment_config, engine_placement


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
