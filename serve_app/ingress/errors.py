"""OpenAI-shaped error responses: sent straight from ASGI middleware, before FastAPI sees the
request (`send_error`), and from FastAPI's exception handlers (`install`) for the errors that
Starlette raises itself (an unknown path, a method a route does not take), which it would answer
as `{"detail": ...}`, and for `OpenAIHTTPException`, whose type and message Ray Serve LLM's
last-resort handler would replace with the exception's class name and a debug string."""

from __future__ import annotations

import json
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serve_app.ray_llm_seam import OpenAIHTTPException

# OpenAI's error types for the statuses Starlette raises (openai-python maps statuses the same way).
STATUS_TYPES = {400: "BadRequestError", 404: "NotFoundError", 405: "BadRequestError"}


def _error(status: int, message: str, type_: str) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": status}}


async def send_error(send, status: int, message: str, type_: str, extra_headers: list | None = None) -> None:
    body = json.dumps(_error(status, message, type_)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(extra_headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _http_exception(request: Request, exc: HTTPException) -> JSONResponse:
    message = str(exc.detail)
    if message == HTTPStatus(exc.status_code).phrase:  # Starlette's own "Not Found": say what was not found
        message = f"{message}: {request.method} {request.url.path}"
    error = _error(exc.status_code, message, STATUS_TYPES.get(exc.status_code, "APIError"))
    return JSONResponse(error, status_code=exc.status_code, headers=exc.headers)


async def _openai_exception(request: Request, exc: OpenAIHTTPException) -> JSONResponse:
    return JSONResponse(_error(exc.status_code, exc.message, exc.type), status_code=exc.status_code)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(OpenAIHTTPException, _openai_exception)
