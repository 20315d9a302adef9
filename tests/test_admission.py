"""Bounded load at the ingress: the admission middleware over ASGI (no Ray needed), and the
config that sizes it. A burst against the live app is in tests/test_http.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from serve_app.config.schema import AppConfig, OverloadConfig, format_validation_error
from serve_app.ingress.admission import AdmissionMiddleware
from serve_app.ray_llm_seam import new_ingress_app
from tests.helpers import local_args


def _app(overload: OverloadConfig, gate: asyncio.Event):
    app = new_ingress_app()

    @app.post("/v1/completions")
    async def completions(body: dict):
        if body.get("fail"):
            raise RuntimeError("engine failed")
        await gate.wait()
        return {"ok": True}

    @app.get("/v1/models")
    async def models():
        return {"data": []}

    app.add_middleware(AdmissionMiddleware, overload=overload)
    return app


def test_completions_past_the_limit_are_refused_at_once_and_slots_come_back():
    async def go():
        gate = asyncio.Event()
        app = _app(OverloadConfig(max_in_flight=2, retry_after_s=2.5), gate)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            held = [asyncio.create_task(client.post("/v1/completions", json={})) for _ in range(2)]
            while app.middleware_stack is None or _admission(app).in_flight < 2:
                await asyncio.sleep(0.01)
            refused = await client.post("/v1/completions", json={})
            other_route = await client.get("/v1/models")  # only completions count
            gate.set()
            done = await asyncio.gather(*held)
            failed = await client.post("/v1/completions", json={"fail": True})
            after = await client.post("/v1/completions", json={})
            return refused, other_route, done, failed, after, _admission(app).in_flight

    refused, other_route, done, failed, after, in_flight = asyncio.run(go())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3"
    assert refused.json()["error"]["type"] == "RateLimitError"
    assert "ingress.overload.max_in_flight" in refused.json()["error"]["message"]
    assert other_route.status_code == 200
    assert [r.status_code for r in done] == [200, 200]
    assert failed.status_code == 500 and after.status_code == 200 and in_flight == 0  # a failure frees its slot


def _admission(app) -> AdmissionMiddleware:
    layer = app.middleware_stack
    while not isinstance(layer, AdmissionMiddleware):
        layer = layer.app
    return layer


def test_the_limit_defaults_to_what_the_pools_hold_and_must_leave_room_for_health_calls():
    args = local_args()
    args["ingress"].pop("overload", None)
    args["ingress"].update(num_replicas=2, max_ongoing_requests=512)
    pools = [p for m in args["models"] for p in m["pools"]]
    held = sum(p.get("max_ongoing_requests", 64) * p.get("autoscaling", {}).get("max_replicas", 1) for p in pools)
    assert AppConfig.model_validate(args).ingress.overload.max_in_flight == -(-held // 2)
    args["ingress"].update(overload={"max_in_flight": 512})
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate(args)
    assert (
        "ingress.overload.max_in_flight (512) must be under ingress.max_ongoing_requests (512)"
        in format_validation_error(err.value)
    )
