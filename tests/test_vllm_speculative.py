"""A pool takes vLLM's own --speculative-config JSON as it is: checked against vLLM's
SpeculativeConfig, the method inferred where vLLM infers it, and handed to the engine unchanged."""

from __future__ import annotations

import json

import pytest

from serve_app.config.architecture import resolve_source
from serve_app.config.schema import AppConfig, SpeculationConfig
from serve_app.llm_configs import build_llm_config
from tests.helpers import DRAFT_POOL, local_args, pool_of, validation_error
from tests.test_architecture import fake_cache


def with_draft_pool_speculation(speculation: dict) -> dict:
    args = local_args()
    pool_of(args, DRAFT_POOL)["speculation"] = speculation
    return args


def pool_speculation(args: dict):
    model = AppConfig.model_validate(args).models[0]
    return model, next(p for p in model.pools if p.name == DRAFT_POOL)


def test_a_draft_model_recipe_reaches_the_engine_unchanged():
    recipe = {"method": "draft_model", "model": ".cache/testmodels/draft", "num_speculative_tokens": 5}
    model, pool = pool_speculation(with_draft_pool_speculation({"speculative_config": recipe}))
    assert (pool.speculation.method, pool.speculation.num_speculative_tokens) == ("draft_model", 5)
    assert pool.speculation.draft.source == recipe["model"]  # so the vocabulary and memory checks see it
    engine_config = build_llm_config(model, pool).engine_kwargs["speculative_config"]
    assert engine_config == {**recipe, "model": resolve_source(recipe["model"])}


def test_a_prompt_lookup_recipe_keeps_vllms_own_options():
    recipe = {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}
    spec = SpeculationConfig.model_validate({"speculative_config": recipe})
    assert spec.draft is None and spec.vllm_config() == recipe


def test_the_method_is_inferred_where_vllm_infers_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from serve_app.config.vllm_speculative import infer_method

    assert infer_method("ngram") == "ngram"
    assert infer_method("yuhuili/EAGLE-LLaMA3-Instruct-8B") == "eagle"
    assert infer_method("yuhuili/EAGLE3-LLaMA3.3-Instruct-70B") == "eagle3"
    assert infer_method("Qwen/Qwen3-0.6B") == "draft_model"
    fake_cache(tmp_path, "ibm-fms/llama3-70b-accelerator", {"model_type": "mlp_speculator", "n_predict": 4})
    assert infer_method("ibm-fms/llama3-70b-accelerator") == "mlp_speculator"


def test_a_speculator_takes_k_from_its_own_config(monkeypatch, tmp_path):
    """vLLM's MLP-speculator recipe names no method and no k: both come from the draft's config.json."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_cache(tmp_path, "ibm-fms/llama3-70b-accelerator", {"model_type": "mlp_speculator", "n_predict": 4})
    recipe = {"model": "ibm-fms/llama3-70b-accelerator", "draft_tensor_parallel_size": 1}
    spec = SpeculationConfig.model_validate({"speculative_config": recipe})
    assert spec.method == "mlp_speculator" and spec.num_speculative_tokens is None
    assert spec.vllm_config() == {"method": "mlp_speculator", **recipe}


@pytest.mark.parametrize(
    ("speculation", "expected"),
    [
        (
            {"speculative_config": {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_maxx": 4}},
            "['prompt_lookup_maxx'] are not fields of vLLM's SpeculativeConfig",
        ),
        (
            {"method": "ngram", "speculative_config": {"method": "ngram", "num_speculative_tokens": 5}},
            "speculative_config replaces ['method']",
        ),
        ({"speculative_config": {"num_speculative_tokens": 5}}, "speculative_config needs 'method' or 'model'"),
        (
            {"speculative_config": {"method": "draft_model", "model": ".cache/testmodels/draft"}},
            "method 'draft_model' needs num_speculative_tokens",
        ),
    ],
)
def test_a_bad_recipe_is_refused_with_what_to_change(speculation, expected):
    msg = validation_error(with_draft_pool_speculation(speculation))
    assert expected in msg and "pools" in msg, msg


def test_vllms_own_config_classes_accept_what_the_pool_hands_the_engine(test_models):
    """The engine arguments of a pool built from vLLM's JSON, through vLLM's own EngineArgs (the
    check vLLM runs at engine start), on the local test models."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    recipe = {"method": "draft_model", "model": ".cache/testmodels/draft", "num_speculative_tokens": 3}
    model, pool = pool_speculation(with_draft_pool_speculation({"speculative_config": recipe}))
    kwargs = build_llm_config(model, pool).engine_kwargs
    vllm_config = AsyncEngineArgs(model=resolve_source(model.source), **kwargs).create_engine_config()
    spec = vllm_config.speculative_config
    assert (spec.method, spec.num_speculative_tokens) == ("draft_model", 3)
    assert json.loads(json.dumps(kwargs["speculative_config"]))["model"] == spec.model
