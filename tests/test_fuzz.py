"""The HTTP API driven from its own OpenAPI schema (schemathesis): whatever a client sends, the
app answers without a server error, refuses in the OpenAI error shape, and still serves after.

Generated bodies name the served model and ask for a few tokens (the schema allows any model and
lengths up to the context, which would only test the generator's patience); everything else is
as the schema allows. No control key is sent: the control routes must refuse in the same shape.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.helpers import MODEL

# Enough to reach every operation's parameters and bad bodies in a few minutes on two cores.
EXAMPLES_PER_OPERATION = 8
MAX_TOKENS = 4


def _bounded(body):
    if isinstance(body, dict):
        body = {**body, "model": MODEL, "max_tokens": MAX_TOKENS}
        body.pop("max_completion_tokens", None)
        for many in ("n", "best_of"):
            if isinstance(body.get(many), int):
                body[many] = min(body[many], 2)
    return body


def test_no_generated_request_gets_a_server_error(serve_app):
    schema = schemathesis.openapi.from_url(f"{serve_app}/openapi.json")
    answered: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case):
            if case.body is not None:
                case.body = _bounded(case.body)
            response = case.call(base_url=serve_app, timeout=120)
            answered.setdefault(operation.label, []).append(response.status_code)
            assert response.status_code < 500, (operation.label, case.body, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert {"message", "type", "code"} <= set(error), (operation.label, response.text)

        call()
    assert len(answered) >= 9, sorted(answered)  # every route of the app was reached
    # Refusals were tried, and so were requests the app served.
    codes = [c for cs in answered.values() for c in cs]
    assert any(c < 300 for c in codes) and any(400 <= c < 500 for c in codes), answered
    assert httpx.get(f"{serve_app}/health", timeout=10).status_code == 200
    served = httpx.post(
        f"{serve_app}/v1/completions",
        timeout=120,
        json={"model": MODEL, "prompt": "def add(a, b):", "max_tokens": MAX_TOKENS},
    )
    assert served.status_code == 200 and served.json()["usage"]["completion_tokens"] == MAX_TOKENS


def test_a_model_the_app_does_not_serve_is_404_in_openai_shape(serve_app):
    response = httpx.get(f"{serve_app}/v1/models/gpt-5", timeout=10)
    assert response.status_code == 404 and "gpt-5" in response.json()["error"]["message"], response.text
    assert httpx.get(f"{serve_app}/v1/models/{MODEL}", timeout=10).json()["id"] == MODEL
