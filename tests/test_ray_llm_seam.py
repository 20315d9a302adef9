"""Pins what `serve_app/ingress/ray_llm.py` takes from Ray Serve LLM's private modules."""

from __future__ import annotations

import asyncio
import inspect

import httpx
import pytest
from fastapi import FastAPI

from serve_app.ingress import ray_llm


def test_the_ingress_app_answers_errors_in_the_openai_shape():
    app = ray_llm.new_ingress_app()
    assert isinstance(app, FastAPI)

    @app.get("/boom")
    async def boom():
        raise ray_llm.OpenAIHTTPException(status_code=404, message="no such thing", type="NotFoundError")

    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/boom")

    response = asyncio.run(call())
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == 404 and "no such thing" in error["message"] and error["type"]


def test_model_cards_and_lists_keep_their_fields():
    fields = ray_llm.ModelList.model_fields
    assert {"object", "data"} <= set(fields)
    with pytest.raises(TypeError):
        ray_llm.to_model_metadata()  # model id and LLM config are required


def test_broadcast_calls_a_method_by_name_on_a_deployments_replicas():
    """POST /v1/spec/reset_prefix_cache calls broadcast(handle, "reset_prefix_cache") per pool
    (tests/test_http.py checks that every replica's cache is emptied)."""
    params = list(inspect.signature(ray_llm.broadcast).parameters)
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
