"""Every error of the ingress app in the OpenAI shape, the ones FastAPI and Starlette raise included
(`serve_app/ingress/errors.py`), on Ray Serve LLM's own ingress app."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_app.ingress import errors
from serve_app.ray_llm_seam import OpenAIHTTPException, new_ingress_app


@pytest.fixture(scope="module")
def app():
    app = new_ingress_app()
    errors.install(app)

    @app.get("/v1/thing")
    async def thing():
        raise OpenAIHTTPException(status_code=400, message="'n' must be at most 2", type="BadRequestError")

    return app


def _call(app, method: str, path: str) -> httpx.Response:
    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)

    return asyncio.run(call())


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and {"message", "type", "param"} <= set(error)
    return error


def test_an_openai_exception_keeps_its_type_and_message(app):
    error = _error(_call(app, "GET", "/v1/thing"), 400)
    assert (error["type"], error["message"]) == ("BadRequestError", "'n' must be at most 2")


def test_an_unknown_path_and_a_wrong_method_are_openai_errors_that_say_what(app):
    error = _error(_call(app, "POST", "/v1/embeddings"), 404)
    assert error["type"] == "NotFoundError" and "POST /v1/embeddings" in error["message"]
    error = _error(_call(app, "DELETE", "/v1/thing"), 405)
    assert error["type"] == "BadRequestError" and "DELETE /v1/thing" in error["message"]
