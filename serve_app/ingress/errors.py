"""OpenAI-shaped error responses sent straight from ASGI middleware, before FastAPI (and its
OpenAI error handler) sees the request."""

from __future__ import annotations

import json


async def send_error(send, status: int, message: str, type_: str, extra_headers: list | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": status}}).encode()
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
