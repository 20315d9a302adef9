"""Who may call which route, and how big a request may be: an ASGI middleware in front of the
OpenAI ingress, so a refused request is answered before its body is parsed.

- Inference and state routes need `Authorization: Bearer KEY` when API keys are configured
  (`ingress.access.api_keys_env` or `api_keys_file`); without keys they are open, as a local
  run is. `/health` stays open for probes.
- Control routes (those that change how the app runs: pinning k, emptying prefix caches) need
  a key of their own (`control_keys_env` or `control_keys_file`) and answer 404 while none is
  configured.
- State routes (`/v1/spec/tuner`, `/v1/spec/router`, `/v1/spec/acceptance`: per-class figures,
  no prompt text) can be turned off (`expose_state: false`).
- A body over `ingress.max_body_bytes` is refused with 413 once that many bytes arrived, and a
  body that is not UTF-8 with 400; both in the OpenAI error shape.

Keys are read when the ingress replica starts, from its environment or a mounted file (a
Kubernetes Secret), and compared as SHA-256 digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from serve_app.config.schema import AccessConfig
from serve_app.ingress.errors import send_error

OPEN_PATHS = {"/health"}
CONTROL_PATHS = {"/v1/spec/tuner/pin", "/v1/spec/reset_prefix_cache"}
STATE_PATHS = {"/v1/spec/tuner", "/v1/spec/router", "/v1/spec/acceptance"}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def load_keys(env: str | None, file: str | None, field: str) -> list[bytes]:
    """Digests of the keys in the environment variable `env` (comma-separated) and in `file`
    (one per line); a configured source that is missing or empty is an error, not an open door."""
    keys: list[str] = []
    if env is not None:
        if not os.environ.get(env, "").strip():
            raise ValueError(
                f"ingress.access.{field}_env: environment variable {env} is not set or empty on this "
                f"node; set it to the key(s), comma-separated, or remove {field}_env"
            )
        keys += [k.strip() for k in os.environ[env].split(",") if k.strip()]
    if file is not None:
        path = Path(file)
        if not path.is_file() or not path.read_text().strip():
            raise ValueError(
                f"ingress.access.{field}_file: {file} is missing or empty on this node; mount the "
                f"secret there or remove {field}_file"
            )
        keys += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [_digest(k) for k in keys]


def check(config: AccessConfig) -> None:
    """Raise now if a configured key source is missing: the ingress replica then fails to start
    with the field to fix, instead of its first request."""
    load_keys(config.api_keys_env, config.api_keys_file, "api_keys")
    load_keys(config.control_keys_env, config.control_keys_file, "control_keys")


def _allowed(digests: list[bytes], headers: dict[bytes, bytes]) -> bool:
    scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return False
    presented = _digest(key.strip())
    return any([hmac.compare_digest(presented, d) for d in digests])  # every key compared


class AccessMiddleware:
    def __init__(self, app, access: AccessConfig, max_body_bytes: int):
        self.app, self.access, self.max_body_bytes = app, access, max_body_bytes
        self.api_keys = load_keys(access.api_keys_env, access.api_keys_file, "api_keys")
        self.control_keys = load_keys(access.control_keys_env, access.control_keys_file, "control_keys")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        path, headers = scope["path"], dict(scope["headers"])
        if refusal := self._refusal(path, headers):
            return await send_error(send, *refusal)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await send_error(send, 413, self._too_large(), "RequestTooLargeError")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await send_error(send, 413, self._too_large(), "RequestTooLargeError")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return await send_error(
                send, 400, f"the request body is not valid UTF-8 (byte {e.start})", "BadRequestError"
            )
        replayed = False

        async def replay():
            # The body once, then the client's own messages: a streaming response still sees it leave.
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is over {self.max_body_bytes} bytes (ingress.max_body_bytes)"

    def _refusal(self, path: str, headers: dict) -> tuple | None:
        challenge = [(b"www-authenticate", b"Bearer")]
        if path in CONTROL_PATHS:
            if not self.control_keys:
                return (
                    404,
                    (
                        "control routes are off; set ingress.access.control_keys_env or control_keys_file to "
                        "turn them on"
                    ),
                    "NotFoundError",
                )
            if not _allowed(self.control_keys, headers):
                return (
                    401,
                    "this route needs a control key: Authorization: Bearer KEY",
                    "AuthenticationError",
                    challenge,
                )
            return None
        if path in STATE_PATHS and not self.access.expose_state:
            return 404, "state routes are off (ingress.access.expose_state: false)", "NotFoundError"
        if self.api_keys and not _allowed(self.api_keys, headers):
            return 401, "missing or wrong API key: send Authorization: Bearer KEY", "AuthenticationError", challenge
        return None
