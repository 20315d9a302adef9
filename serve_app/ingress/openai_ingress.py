"""OpenAI-compatible HTTP ingress that routes each request to a target pool and method.

Built on Ray Serve LLM's `OpenAiIngress` (request parsing, streaming, OpenAI error shape):
this class wires each request to the router's decision (`router/route.py`: its class, its
speculation method and the pool serving it) and reports it. The decision is kept in a context
variable for the duration of the request, because the base class asks for a handle by model id
alone (`_get_configured_serve_handle`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextvars import ContextVar

from fastapi import Request, status
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import OpenAiIngress
from starlette.responses import JSONResponse, Response, StreamingResponse
from vllm.entrypoints.generate.base.protocol import StreamOptions

from serve_app.config.schema import AppConfig, ModelConfig
from serve_app.ingress import access
from serve_app.observability import metrics
from serve_app.proposer.request_spec import CLASS_KEY, RequestSpec
from serve_app.ray_llm_seam import ModelList, OpenAIHTTPException, broadcast
from serve_app.router import route as routing
from serve_app.router.chooser import Policy
from serve_app.router.route import CLASS_HEADER, METHOD_HEADER, POOL_HEADER, Route

REASON_HEADER = "x-spec-reason"
logger = logging.getLogger("ray.serve")

ENDPOINTS = {
    "models": lambda app: app.get("/v1/models", response_model=ModelList),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "health": lambda app: app.get("/health"),
    "tuner": lambda app: app.get("/v1/spec/tuner"),
    "pin_k": lambda app: app.post("/v1/spec/tuner/pin"),
    "router": lambda app: app.get("/v1/spec/router"),
    "acceptance": lambda app: app.get("/v1/spec/acceptance"),
    "reset_prefix_cache": lambda app: app.post("/v1/spec/reset_prefix_cache"),
}

# What a spec tuner route answers 404 with where the app has nothing for it.
TUNER_MISSING = {
    "tuned": "no pool of this app has a spec tuner; set speculation.tuner on a routed pool",
    "planned": "no model of this app routes by goodput; set router.policy: goodput",
    "speculating": "no pool of this app speculates; give a pool a speculation method",
}

# How often an ingress replica fetches the route table: the planner's own pace is seconds.
TABLE_REFRESH_S = 2.0


class PinRequest(BaseModel):
    """Hold the k of one request class and method on a tuned pool; `k: null` resumes tuning."""

    model_config = ConfigDict(extra="forbid")
    model: str
    pool: str
    request_class: str
    method: str
    k: int | None


class ResetPrefixCacheRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str


_current_route: ContextVar[Route] = ContextVar("current_route")


def _bad_request(message: str) -> OpenAIHTTPException:
    return OpenAIHTTPException(status_code=status.HTTP_400_BAD_REQUEST, message=message, type="BadRequestError")


class SpecIngress(OpenAiIngress):
    def __init__(
        self,
        llm_deployments: dict[str, DeploymentHandle],
        model_cards: dict,
        *,
        pool_deployments: dict[str, dict[str, DeploymentHandle]],
        app_config: AppConfig,
        tuner: DeploymentHandle | None = None,
    ):
        super().__init__(llm_deployments, model_cards)
        access.check(app_config.ingress.access)
        self._tuner = tuner
        self._tuner_roles = app_config.tuner_roles()
        self._pool_deployments = pool_deployments
        self._pool_handles = {
            (model, pool): handle.options(stream=True)
            for model, pools in pool_deployments.items()
            for pool, handle in pools.items()
        }
        self._models = {m.id: m for m in app_config.models}
        self._policies = {m.id: Policy(m.router) for m in app_config.models if m.router is not None}
        self._in_flight: Counter[tuple[str, str]] = Counter()
        if tuner is not None and any(m.routes_by_goodput() for m in app_config.models):
            self._table_refresh = asyncio.get_running_loop().create_task(self._refresh_route_table(tuner))

    async def _refresh_route_table(self, tuner: DeploymentHandle) -> None:
        """Keep each goodput policy's table as the spec tuner last planned it."""
        while True:
            try:
                tables = await tuner.routing_table.remote()
                for model_id, table in tables.items():
                    self._policies[model_id].table = table
            except Exception:  # routing goes on by the last table
                logger.exception("fetching the route table failed")
            await asyncio.sleep(TABLE_REFRESH_S)

    def _route(self, model: ModelConfig, body, headers) -> tuple[Route, RequestSpec | None]:
        """The request's route, and for a routed pool what it asks of the proposer."""
        try:
            chosen = routing.route(
                model, body, headers, self._policies.get(model.id), routing.load_per_replica(model, self._in_flight)
            )
            routed = chosen.pool.speculation.method == "routed"
            return chosen, routing.routed_spec(model, chosen, headers) if routed else None
        except routing.RouteError as e:
            raise _bad_request(str(e)) from e

    def _get_configured_serve_handle(self, model_id: str) -> DeploymentHandle:
        route = _current_route.get()
        return self._pool_handles[(route.model, route.pool.name)]

    async def _process_llm_request(self, body, call_method: str, raw_request: Request | None = None) -> Response:
        model_id = await self._get_model_id(body.model)
        body.model = model_id
        model = self._models[model_id]
        route, spec = self._route(model, body, raw_request.headers)
        metrics.router_choices().inc(
            tags={
                "model": model_id,
                "request_class": route.request_class,
                "method": route.method,
                "reason": route.reason,
            }
        )
        # Every pool learns the request's class: a pool that runs one method splits its draft
        # counts over the classes it serves (observability/engine_steps.py).
        xargs = spec.to_xargs() if spec is not None else {CLASS_KEY: route.request_class}
        body.vllm_xargs = {**(body.vllm_xargs or {}), **xargs}
        if getattr(body, "stream", False):
            # `usage` in every answer, streaming too: vLLM then ends the stream with a usage chunk.
            body.stream_options = body.stream_options or StreamOptions(include_usage=True)
        observer = _Observer(self, route)
        token = _current_route.set(route)
        try:
            response = await super()._process_llm_request(body, call_method, raw_request)
        except Exception as e:
            observer.failed(getattr(e, "status_code", 500))
            raise
        finally:
            _current_route.reset(token)
        response.headers[POOL_HEADER] = route.pool.name
        response.headers[METHOD_HEADER] = route.method
        response.headers[CLASS_HEADER] = route.request_class
        response.headers[REASON_HEADER] = route.reason
        if isinstance(response, StreamingResponse):
            response.body_iterator = observer.stream(response.body_iterator)
        else:
            observer.finished(json.loads(response.body), ttft_s=None)
        return response

    async def health(self) -> JSONResponse:
        """200 once every deployment of the app (every pool's engines) is running, else 503."""
        app_name = serve.get_replica_context().app_name
        app = (await asyncio.to_thread(serve.status)).applications[app_name]
        deployments = {name: d.status.value for name, d in app.deployments.items()}
        ready = app.status.value == "RUNNING"
        return JSONResponse(
            {"status": "ok" if ready else "starting", "application": app.status.value, "deployments": deployments},
            status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    def _tuner_handle(self, serves: str) -> DeploymentHandle:
        """The spec tuner, for a route that needs what `serves` names; 404 (with the config field
        that turns it on) where the app has none of it."""
        if self._tuner is None or not self._tuner_roles[serves]:
            raise OpenAIHTTPException(
                status_code=status.HTTP_404_NOT_FOUND, type="NotFoundError", message=TUNER_MISSING[serves]
            )
        return self._tuner

    async def tuner(self) -> JSONResponse:
        """Per tuned pool: each class and method's k, acceptance estimate and last decision, and the
        k table each replica last applied."""
        return JSONResponse(await self._tuner_handle("tuned").state.remote())

    async def router(self) -> JSONResponse:
        """Per model with the goodput router and per class: each method's k, expected goodput
        (tokens/s of one request) and the evidence behind it, and the method the class gets."""
        return JSONResponse(await self._tuner_handle("planned").router_state.remote())

    async def acceptance(self) -> JSONResponse:
        """Per pool, request class and method: drafts, draft tokens and accepted tokens since the
        replicas started, the acceptance rate and the mean acceptance length."""
        return JSONResponse(await self._tuner_handle("speculating").acceptance.remote())

    async def pin_k(self, body: PinRequest) -> JSONResponse:
        try:
            await self._tuner_handle("tuned").pin.remote(body.model, body.pool, body.request_class, body.method, body.k)
        except ValueError as e:
            raise _bad_request(str(e).splitlines()[-1].removeprefix("ValueError: ")) from e
        return JSONResponse({"pinned": body.k is not None, **body.model_dump()})

    async def reset_prefix_cache(self, body: ResetPrefixCacheRequest) -> JSONResponse:
        """Empty the prefix cache of every replica of every target pool of a model, so a benchmark
        that sends the same prompts to several arms starts each one cold (Ray Serve LLM's
        /reset_prefix_cache, for an app with a deployment per pool)."""
        model_id = await self._get_model_id(body.model)
        replicas = {}
        for pool, handle in self._pool_deployments[model_id].items():
            replicas[pool] = len(await asyncio.to_thread(broadcast, handle, "reset_prefix_cache"))
        return JSONResponse({"model": model_id, "replicas_reset": replicas})


class _Observer:
    """One request's in-flight count and metrics, from start to last byte."""

    def __init__(self, ingress: SpecIngress, route: Route):
        self.ingress, self.route, self.tags = ingress, route, route.tags()
        self.start = time.perf_counter()
        self.key = (route.model, route.pool.name)
        ingress._in_flight[self.key] += 1
        self.done = False

    def _leave(self) -> None:
        if not self.done:
            self.done = True
            self.ingress._in_flight[self.key] -= 1

    def failed(self, code: int) -> None:
        self._leave()
        metrics.requests().inc(tags={**self.tags, "status": str(code)})

    def finished(self, payload: dict, ttft_s: float | None) -> None:
        self._leave()
        elapsed = time.perf_counter() - self.start
        tokens = (payload.get("usage") or {}).get("completion_tokens", 0)
        metrics.requests().inc(tags={**self.tags, "status": "200"})
        metrics.generated_tokens().inc(tokens, tags=self.tags)
        if ttft_s is not None:
            metrics.time_to_first_token().observe(ttft_s, tags=self.tags)
        decode_tokens = tokens - (ttft_s is not None)
        decode_s = elapsed - (ttft_s or 0)
        if decode_tokens > 0 and decode_s > 0:
            metrics.time_per_output_token().observe(decode_s / decode_tokens, tags=self.tags)

    async def stream(self, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
        ttft = None
        last_usage: dict = {}
        try:
            async for chunk in chunks:
                if ttft is None:
                    ttft = time.perf_counter() - self.start
                if '"usage":{' in chunk or '"usage": {' in chunk:
                    for line in chunk.splitlines():
                        if line.startswith("data: {") and '"usage"' in line:
                            last_usage = json.loads(line[len("data: ") :])
                yield chunk
        except Exception as e:
            # Headers are sent: the status cannot change, and Serve would end the stream as if
            # it were whole. An error event, as vLLM sends one, tells the client it was cut.
            lost = isinstance(e, RayActorError)
            code = 503 if lost else 500
            self.failed(code)
            logger.warning(
                "a stream on pool %s failed after %s: %r",
                self.route.pool.name,
                "its first token" if ttft is not None else "its start",
                e,
            )
            message = (
                "the replica serving this answer was lost mid-answer; retry the request"
                if lost
                else f"the answer failed mid-stream: {type(e).__name__}"
            )
            error = {
                "message": message,
                "type": "ServiceUnavailableError" if lost else "InternalServerError",
                "param": None,
                "code": code,
            }
            yield f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n"
            return
        except BaseException:  # the client left (cancelled): nothing to tell it
            self.failed(499)
            raise
        self.finished(last_usage, ttft)
