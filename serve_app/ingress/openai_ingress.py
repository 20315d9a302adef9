"""OpenAI-compatible HTTP ingress that sends each request to one target pool of its model.

Built on Ray Serve LLM's `OpenAiIngress` (request parsing, streaming, OpenAI error shape):
this class only decides the pool per request and reports it. The decision is kept in a
context variable for the duration of the request, because the base class asks for a handle
by model id alone (`_get_configured_serve_handle`).
"""

from __future__ import annotations

import asyncio
import json
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import AsyncIterator

from fastapi import HTTPException, Request, status
from ray import serve
from ray.llm._internal.serve.core.configs.openai_api_models import ModelList, OpenAIHTTPException
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import OpenAiIngress
from starlette.responses import JSONResponse, Response, StreamingResponse
from vllm.entrypoints.generate.base.protocol import StreamOptions

from serve_app.observability import metrics

POOL_HEADER = "x-spec-pool"
METHOD_HEADER = "x-spec-method"
CLASS_HEADER = "x-request-class"

ENDPOINTS = {
    "models": lambda app: app.get("/v1/models", response_model=ModelList),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "health": lambda app: app.get("/health"),
}


@dataclass(frozen=True)
class PoolInfo:
    model: str
    pool: str
    method: str


@dataclass(frozen=True)
class Route:
    pool: PoolInfo
    request_class: str

    def tags(self) -> dict[str, str]:
        return {"model": self.pool.model, "pool": self.pool.pool, "method": self.pool.method,
                "request_class": self.request_class}


_current_route: ContextVar[Route] = ContextVar("current_route")


class SpecIngress(OpenAiIngress):
    def __init__(self, llm_deployments: dict[str, DeploymentHandle], model_cards: dict, *,
                 pool_deployments: dict[str, dict[str, DeploymentHandle]], pool_methods: dict[str, dict[str, str]],
                 default_pools: dict[str, str]):
        super().__init__(llm_deployments, model_cards)
        self._pool_handles = {
            (model, pool): handle.options(stream=True)
            for model, pools in pool_deployments.items() for pool, handle in pools.items()
        }
        self._pools = {model: {pool: PoolInfo(model, pool, method) for pool, method in methods.items()}
                       for model, methods in pool_methods.items()}
        self._default_pools = default_pools

    def _route(self, model_id: str, request: Request) -> Route:
        pools = self._pools[model_id]
        name = request.headers.get(POOL_HEADER) or self._default_pools[model_id]
        if name not in pools:
            raise OpenAIHTTPException(
                status_code=status.HTTP_400_BAD_REQUEST, type="BadRequestError",
                message=f"unknown pool '{name}' in header {POOL_HEADER} for model '{model_id}'; "
                        f"pools: {sorted(pools)}")
        return Route(pools[name], request.headers.get(CLASS_HEADER, "default"))

    def _get_configured_serve_handle(self, model_id: str) -> DeploymentHandle:
        route = _current_route.get()
        return self._pool_handles[(route.pool.model, route.pool.pool)]

    async def _get_model_id(self, model: str | None) -> str:
        # The base class raises FastAPI's HTTPException, which FastAPI answers as {"detail": ...}
        # before the OpenAI error middleware sees it.
        try:
            return await super()._get_model_id(model)
        except HTTPException as e:
            raise OpenAIHTTPException(status_code=e.status_code, message=e.detail,
                                      type="NotFoundError" if e.status_code == 404 else "BadRequestError") from e

    async def _process_llm_request(self, body, call_method: str, raw_request: Request | None = None) -> Response:
        model_id = await self._get_model_id(body.model)
        body.model = model_id
        route = self._route(model_id, raw_request)
        if getattr(body, "stream", False):
            # `usage` in every answer, streaming too: vLLM then ends the stream with a usage chunk.
            body.stream_options = body.stream_options or StreamOptions(include_usage=True)
        tags = route.tags()
        start = time.perf_counter()
        token = _current_route.set(route)
        try:
            response = await super()._process_llm_request(body, call_method, raw_request)
        except Exception as e:
            code = getattr(e, "status_code", 500)
            metrics.requests().inc(tags={**tags, "status": str(code)})
            raise
        finally:
            _current_route.reset(token)
        response.headers[POOL_HEADER] = route.pool.pool
        response.headers[METHOD_HEADER] = route.pool.method
        response.headers[CLASS_HEADER] = route.request_class
        if isinstance(response, StreamingResponse):
            response.body_iterator = _observe_stream(response.body_iterator, tags, start)
        else:
            _observe_usage(json.loads(response.body), tags, time.perf_counter() - start, None)
        return response

    async def health(self) -> JSONResponse:
        """200 once every deployment of the app (every pool's engines) is running, else 503."""
        app_name = serve.get_replica_context().app_name
        app = (await asyncio.to_thread(serve.status)).applications[app_name]
        deployments = {name: d.status.value for name, d in app.deployments.items()}
        ready = app.status.value == "RUNNING"
        return JSONResponse({"status": "ok" if ready else "starting", "application": app.status.value,
                             "deployments": deployments},
                            status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


def _observe_usage(payload: dict, tags: dict[str, str], elapsed_s: float, ttft_s: float | None) -> None:
    usage = payload.get("usage") or {}
    tokens = usage.get("completion_tokens", 0)
    metrics.requests().inc(tags={**tags, "status": "200"})
    metrics.generated_tokens().inc(tokens, tags=tags)
    if ttft_s is not None:
        metrics.time_to_first_token().observe(ttft_s, tags=tags)
    if tokens > 1:
        metrics.time_per_output_token().observe((elapsed_s - (ttft_s or 0)) / (tokens - (ttft_s is not None)),
                                                tags=tags)


async def _observe_stream(chunks: AsyncIterator[str], tags: dict[str, str], start: float) -> AsyncIterator[str]:
    ttft = None
    last_usage: dict = {}
    async for chunk in chunks:
        if ttft is None:
            ttft = time.perf_counter() - start
        if '"usage":{' in chunk or '"usage": {' in chunk:
            for line in chunk.splitlines():
                if line.startswith("data: {") and '"usage"' in line:
                    last_usage = json.loads(line[len("data: "):])
        yield chunk
    _observe_usage(last_usage, tags, time.perf_counter() - start, ttft)
