"""The access middleware in front of Ray Serve LLM's own ingress app: keys, routes, body limits.

Driven over ASGI (no Ray needed); the live app's control key, 413 and UTF-8 answers are checked
in tests/test_http.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_app.config.schema import AccessConfig
from serve_app.ingress.access import AccessMiddleware, check
from serve_app.ray_llm_seam import new_ingress_app

API, CONTROL = "api-key-1", "control-key-1"


def _app(access: AccessConfig, max_body_bytes: int = 1024):
    app = new_ingress_app()

    @app.post("/v1/completions")
    async def completions(body: dict):
        return {"echo": body}

    @app.post("/v1/spec/tuner/pin")
    async def pin():
        return {"pinned": True}

    @app.get("/v1/spec/router")
    async def router():
        return {"classes": {}}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    app.add_middleware(AccessMiddleware, access=access, max_body_bytes=max_body_bytes)
    return app


def _call(app, method: str, path: str, key: str | None = None, headers: dict | None = None, **kwargs) -> httpx.Response:
    headers = {**(headers or {}), **({"authorization": f"Bearer {key}"} if key else {})}

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    return asyncio.run(go())


@pytest.fixture
def keyed(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_API_KEYS", f"other, {API}")
    (tmp_path / "control").write_text(f"\n{CONTROL}\n")
    return _app(AccessConfig(api_keys_env="TEST_API_KEYS", control_keys_file=str(tmp_path / "control")))


def test_inference_and_state_routes_need_an_api_key(keyed):
    for key in (None, "wrong", CONTROL):
        response = _call(keyed, "POST", "/v1/completions", key, json={"prompt": "hi"})
        assert response.status_code == 401, key
        assert response.json()["error"] == {
            "message": "missing or wrong API key: send Authorization: Bearer KEY",
            "type": "AuthenticationError",
            "param": None,
            "code": 401,
        }
    assert _call(keyed, "POST", "/v1/completions", API, json={"prompt": "hi"}).json() == {"echo": {"prompt": "hi"}}
    assert _call(keyed, "POST", "/v1/completions", "other", json={"prompt": "hi"}).status_code == 200
    assert _call(keyed, "GET", "/v1/spec/router").status_code == 401
    assert _call(keyed, "GET", "/v1/spec/router", API).status_code == 200
    assert _call(keyed, "GET", "/health").status_code == 200  # probes need no key


def test_control_routes_need_their_own_key_and_are_off_without_one(keyed):
    assert _call(keyed, "POST", "/v1/spec/tuner/pin", API).status_code == 401  # an API key is not enough
    assert _call(keyed, "POST", "/v1/spec/tuner/pin", CONTROL).json() == {"pinned": True}
    open_app = _app(AccessConfig())
    response = _call(open_app, "POST", "/v1/spec/tuner/pin", CONTROL)
    assert response.status_code == 404 and "control_keys_env" in response.json()["error"]["message"]
    assert _call(open_app, "POST", "/v1/completions", json={"prompt": "hi"}).status_code == 200  # no API keys: open


def test_state_routes_can_be_turned_off():
    app = _app(AccessConfig(expose_state=False))
    response = _call(app, "GET", "/v1/spec/router")
    assert response.status_code == 404 and "expose_state" in response.json()["error"]["message"]


def test_bodies_over_the_limit_get_413_before_parsing_and_bad_utf8_gets_400():
    app = _app(AccessConfig(), max_body_bytes=1024)
    response = _call(
        app,
        "POST",
        "/v1/completions",
        content=b'{"prompt": "' + b"x" * 2000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413 and response.json()["error"]["type"] == "RequestTooLargeError"

    async def chunks():  # no content-length: counted as it arrives
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 100
        yield b'"}'

    response = _call(app, "POST", "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    response = _call(
        app, "POST", "/v1/completions", content=b'{"prompt": "\xff"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("the request body is not")
    assert _call(app, "POST", "/v1/completions", json={"prompt": "é" * 100}).status_code == 200


def test_a_configured_key_source_that_is_missing_fails_at_start(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_KEYS", raising=False)
    with pytest.raises(ValueError, match="ingress.access.api_keys_env: environment variable NO_SUCH_KEYS is not set"):
        check(AccessConfig(api_keys_env="NO_SUCH_KEYS"))
    with pytest.raises(ValueError, match="ingress.access.control_keys_file: .* is missing or empty"):
        check(AccessConfig(control_keys_file=str(tmp_path / "absent")))
