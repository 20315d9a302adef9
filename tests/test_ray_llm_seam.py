"""Pins what `serve_app/ray_llm_seam.py` takes from Ray Serve LLM's private modules."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from serve_app import ray_llm_seam


def test_the_ingress_app_answers_errors_in_the_openai_shape():
    app = ray_llm_seam.new_ingress_app()
    assert isinstance(app, FastAPI)

    @app.get("/boom")
    async def boom():
        raise ray_llm_seam.OpenAIHTTPException(status_code=404, message="no such thing", type="NotFoundError")

    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/boom")

    response = asyncio.run(call())
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == 404 and "no such thing" in error["message"] and error["type"]


def test_model_cards_and_lists_keep_their_fields():
    fields = ray_llm_seam.ModelList.model_fields
    assert {"object", "data"} <= set(fields)
    with pytest.raises(TypeError):
        ray_llm_seam.to_model_metadata()  # model id and LLM config are required


def test_broadcast_calls_a_method_by_name_on_a_deployments_replicas():
    """POST /v1/spec/reset_prefix_cache calls broadcast(handle, "reset_prefix_cache") per pool
    (tests/test_http.py checks that every replica's cache is emptied)."""
    params = list(inspect.signature(ray_llm_seam.broadcast).parameters)
    assert params[:2] == ["handle", "method_name"]


def test_the_ingress_methods_spec_ingress_overrides_keep_their_signatures_and_call_order():
    """SpecIngress overrides three private methods of OpenAiIngress: it routes in
    `_process_llm_request` and hands the pool over to `_get_configured_serve_handle`, which the
    base class must still call (from `_get_response`, which `_process_llm_request` calls) to
    reach the model's deployment."""
    from ray.serve.llm.ingress import OpenAiIngress

    params = {
        name: list(inspect.signature(getattr(OpenAiIngress, name)).parameters)
        for name in ("_process_llm_request", "_get_configured_serve_handle", "_get_model_id")
    }
    assert params == {
        "_process_llm_request": ["self", "body", "call_method", "raw_request"],
        "_get_configured_serve_handle": ["self", "model_id"],
        "_get_model_id": ["self", "model"],
    }
    assert "self._get_response(" in inspect.getsource(OpenAiIngress._process_llm_request)
    assert "self._get_configured_serve_handle(model_id)" in inspect.getsource(OpenAiIngress._get_response)


def test_the_app_engine_picks_vllms_executor_where_ray_serve_llm_builds_it():
    """`AppEngine` overrides `VLLMEngine._start_async_llm_engine`, which must still take the
    engine config and pick the executor class from it after the override had its say."""
    from serve_app.engine import ONE_PROCESS_EXECUTOR, AppEngine, one_process_if_one_cpu_rank

    assert list(inspect.signature(ray_llm_seam.VLLMEngine._start_async_llm_engine).parameters) == [
        "self",
        "vllm_engine_args",
        "vllm_engine_config",
        "placement_group",
    ]
    assert "Executor.get_class(vllm_engine_config)" in inspect.getsource(
        ray_llm_seam.VLLMEngine._start_async_llm_engine
    )
    assert issubclass(AppEngine, ray_llm_seam.VLLMEngine)

    from serve_app.draft_worker.server import DraftServer
    from serve_app.target.server import TargetServer

    assert TargetServer._default_engine_cls is AppEngine and DraftServer._default_engine_cls is AppEngine
    from ray.serve.llm import LLMServer

    assert "self._default_engine_cls" in inspect.getsource(LLMServer._get_default_engine_class)

    from vllm.config import ParallelConfig

    one_rank = SimpleNamespace(parallel_config=ParallelConfig(distributed_executor_backend="mp"))
    one_process_if_one_cpu_rank(one_rank)  # this box is CPU-only, as CI is
    assert one_rank.parallel_config.distributed_executor_backend == ONE_PROCESS_EXECUTOR
    two_ranks = SimpleNamespace(
        parallel_config=ParallelConfig(tensor_parallel_size=2, distributed_executor_backend="mp")
    )
    one_process_if_one_cpu_rank(two_ranks)
    assert two_ranks.parallel_config.distributed_executor_backend == "mp"
