"""The running app over HTTP with the official openai client: configs/local.yaml on real
Ray Serve and real vLLM CPU engines (plain, routed and draft-model pools, and a draft worker)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import openai
import pytest

from cluster.scrape import per_pool, quiet_pool_counters, samples, scrape, settled_pool_counters
from cluster.testmodels.tasks import EDIT_MARKER
from serve_app.config.schema import AppConfig
from tests.helpers import (
    CONTROL_AUTH,
    DRAFT_POOL,
    MODEL,
    PLAIN_POOL,
    ROUTED_POOL,
    complete,
    local_args,
    panel_series,
    wait_until,
)

CODE = "def parse_args(argv):\n    parser = argparse.ArgumentParser()\n    parser.add_argument("
# method -> the pool of configs/local.yaml that runs it
POOL_OF = {
    "none": PLAIN_POOL,
    "ngram": ROUTED_POOL,
    "draft_model": DRAFT_POOL,
    "remote_draft": ROUTED_POOL,
    "local_draft": ROUTED_POOL,
    "ngram_or_draft": ROUTED_POOL,
}
# A code edit: the test target repeats its own phrases in the answer, so prompt lookup finds drafts.
CODE_EDIT = CODE + "args)\n    return parser.parse_args(argv)\n" + EDIT_MARKER


def _complete(client, method: str | None = None, headers: dict | None = None, **params):
    """The code prompt, 24 tokens, by `method` when given."""
    headers = {**({"x-spec-method": method} if method else {}), **(headers or {})}
    return complete(client, headers, **{"prompt": CODE, "max_tokens": 24, **params})


def test_models_lists_the_model(openai_client):
    assert [m.id for m in openai_client.models.list().data] == [MODEL]


def test_health_reports_every_pool_running(serve_app):
    body = httpx.get(f"{serve_app}/health", timeout=10).json()
    assert body["status"] == "ok"
    assert set(body["deployments"]) == {
        "ingress",
        "target-tiny-llama-plain",
        "target-tiny-llama-routed",
        "target-tiny-llama-draft",
        "draft-tiny-llama-tiny-draft",
        "spec-tuner",
    }


def test_completion_is_routed_and_reports_usage(openai_client):
    raw = _complete(openai_client)
    assert raw.headers["x-request-class"] == "code_edit"  # the classifier saw code
    assert raw.headers["x-spec-method"] in ("ngram", "draft_model", "none")
    assert raw.headers["x-spec-pool"] == POOL_OF[raw.headers["x-spec-method"]]
    completion = raw.parse()
    assert completion.model == MODEL
    assert completion.choices[0].text
    assert completion.usage.completion_tokens == 24
    assert completion.usage.prompt_tokens > 0


def test_greedy_output_is_the_same_with_every_speculation_method(openai_client):
    """Speculative decoding is lossless: at temperature 0 every pool returns the plain output."""
    texts = {}
    for method, pool in POOL_OF.items():
        # k pinned on the routed pool, where the spec tuner could otherwise turn drafting off.
        raw = _complete(openai_client, method, headers={"x-spec-k": "4"}, max_tokens=32)
        assert (raw.headers["x-spec-method"], raw.headers["x-spec-pool"]) == (method, pool)
        texts[method] = raw.parse().choices[0].text
    assert {method: text for method, text in texts.items() if text != texts["none"]} == {}


def test_chat_completion(openai_client):
    chat = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a Python function."}], max_tokens=16, temperature=0.0
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.usage.completion_tokens == 16


def test_streaming_completion_matches_non_streaming(openai_client):
    expected = _complete(openai_client).parse().choices[0].text
    chunks = list(
        openai_client.completions.create(model=MODEL, prompt=CODE, max_tokens=24, temperature=0.0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == 24


def test_streaming_chat_is_server_sent_events(serve_app):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{serve_app}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' in events[-2]


def _error_body(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body["error"]) >= {"message", "type", "code"}, body
    return body["error"]


def test_unknown_model_is_404_in_openai_shape(openai_client):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.completions.create(model="no-such-model", prompt="x", max_tokens=4)
    assert "no-such-model" in _error_body(info.value)["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": -1},
        {"temperature": "hot"},
        {"max_tokens": 4, "prompt": "word " * 2000},  # longer than max_model_len 1024
    ],
)
def test_invalid_parameters_are_400(openai_client, params):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.completions.create(**{"model": MODEL, "prompt": CODE, **params})
    assert _error_body(info.value)["message"]


def test_unknown_pool_method_or_class_is_400(openai_client):
    for headers, message in [
        ({"x-spec-pool": "warp-drive"}, "unknown pool 'warp-drive'"),
        ({"x-spec-method": "telepathy"}, "no pool of model 'tiny-llama' runs method 'telepathy'"),
        ({"x-request-class": "poetry"}, "unknown request class 'poetry'"),
    ]:
        with pytest.raises(openai.BadRequestError) as info:
            _complete(openai_client, headers=headers)
        assert message in _error_body(info.value)["message"]


def test_explicit_class_picks_its_method(openai_client):
    raw = _complete(openai_client, headers={"x-request-class": "bulk"})
    # The plain pool takes no policy traffic (configs/local.yaml): the routed pool decodes plainly.
    assert (raw.headers["x-request-class"], raw.headers["x-spec-method"], raw.headers["x-spec-pool"]) == (
        "bulk",
        "none",
        ROUTED_POOL,
    )


def test_parameters_rejected_under_speculation_go_to_the_plain_pool(openai_client):
    """vLLM refuses min_p and logit_bias when speculation is configured; they still get served."""
    for params in ({"extra_body": {"min_p": 0.1}}, {"logit_bias": {"17": -100}}):
        raw = _complete(openai_client, **params)
        assert (raw.headers["x-spec-pool"], raw.headers["x-spec-reason"]) == (PLAIN_POOL, "unsupported_params")
        assert raw.parse().usage.completion_tokens == 24


def _routed_counters_after(openai_client, metrics_url: str, count: int, **complete_kwargs) -> dict[str, float]:
    # Counters of earlier requests may still be on their way; they must not count as these.
    before = quiet_pool_counters(metrics_url, ROUTED_POOL)
    for _ in range(count):
        assert _complete(openai_client, **complete_kwargs).headers["x-spec-pool"] == ROUTED_POOL
    after = settled_pool_counters(metrics_url, ROUTED_POOL, before["requests"] + count)
    assert after["requests"] >= before["requests"] + count, "the routed pool's counters did not catch up"
    return {key: after[key] - before[key] for key in after}


def test_per_request_method_and_k_reach_the_proposer(openai_client, ray_cluster):
    """One routed engine: its own spec-decode counters show each request's method and k."""
    url = ray_cluster["metrics_url"]
    routed = {"x-spec-pool": ROUTED_POOL}
    none = _routed_counters_after(openai_client, url, 2, headers={**routed, "x-spec-method": "none"}, prompt=CODE_EDIT)
    assert none["drafts"] == 0 and none["draft_tokens"] == 0
    ngram = {**routed, "x-spec-method": "ngram"}
    k1 = _routed_counters_after(openai_client, url, 2, headers={**ngram, "x-spec-k": "1"}, prompt=CODE_EDIT)
    assert k1["drafts"] > 0 and k1["draft_tokens"] == k1["drafts"]  # exactly one token per draft
    k4 = _routed_counters_after(openai_client, url, 2, headers={**ngram, "x-spec-k": "4"}, prompt=CODE_EDIT)
    # up to 4 tokens per draft, and prompt lookup finds matches longer than one token
    assert k4["drafts"] > 0 and k4["drafts"] < k4["draft_tokens"] <= 4 * k4["drafts"]
    # The draft model in the engine's worker drafts its k at every step, and some are accepted.
    local = _routed_counters_after(
        openai_client, url, 2, headers={**routed, "x-spec-method": "local_draft", "x-spec-k": "3"}
    )
    assert local["drafts"] > 0 and local["draft_tokens"] == 3 * local["drafts"] and local["accepted_tokens"] > 0


TUNED = {"model": MODEL, "pool": ROUTED_POOL, "request_class": "chat", "method": "remote_draft"}


def _tuner_state(base: str) -> dict:
    return httpx.get(f"{base}/v1/spec/tuner", timeout=30).json()["tiny-llama/routed"]


def _pin(base: str, k: int | None) -> None:
    response = httpx.post(f"{base}/v1/spec/tuner/pin", json={**TUNED, "k": k}, headers=CONTROL_AUTH, timeout=30)
    assert response.status_code == 200, response.text


def test_a_new_k_from_the_tuner_reaches_the_running_engine(serve_app, openai_client, ray_cluster, prometheus):
    """The tuner's k (held here at known values) reaches every replica's proposer, and vLLM's own
    counters show it as draft tokens per draft, with the same replicas and no restart."""
    replicas = set(_tuner_state(serve_app)["applied"])
    assert replicas, "no routed replica has reported to the tuner"
    tokens_per_draft = {}
    try:
        for k in (2, 5):
            _pin(serve_app, k)
            wait_until(
                lambda: all(
                    ["chat", "remote_draft", k, 0.0] in table for table in _tuner_state(serve_app)["applied"].values()
                ),
                30,
                f"every routed replica to apply k={k}",
            )
            # No x-spec-k: the request's k is the tuner's.
            delta = _routed_counters_after(
                openai_client,
                ray_cluster["metrics_url"],
                2,
                prompt=CODE_EDIT,
                headers={"x-spec-method": "remote_draft", "x-request-class": "chat"},
            )
            tokens_per_draft[k] = delta["draft_tokens"] / delta["drafts"]
    finally:
        _pin(serve_app, None)
    assert tokens_per_draft == {2: 2.0, 5: 5.0}
    assert set(_tuner_state(serve_app)["applied"]) == replicas
    [changes] = panel_series(prometheus, "Changes of k")
    assert (ROUTED_POOL, "chat", "remote_draft") in {
        (s["metric"]["pool"], s["metric"]["request_class"], s["metric"]["method"]) for s in changes
    }


def test_bad_pin_is_400_in_openai_shape(serve_app):
    for change, message in [
        ({"request_class": "poetry"}, "tunes no (poetry, remote_draft)"),
        ({"k": 99}, "k must be from 0 to 8"),
        ({"pool": PLAIN_POOL}, f"no tuned pool '{PLAIN_POOL}'"),
    ]:
        response = httpx.post(
            f"{serve_app}/v1/spec/tuner/pin", json={**TUNED, "k": 3, **change}, headers=CONTROL_AUTH, timeout=30
        )
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]


def test_control_route_needs_its_key_and_bodies_are_bounded(serve_app):
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = httpx.post(f"{serve_app}/v1/spec/tuner/pin", json={**TUNED, "k": 3}, headers=headers, timeout=30)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "AuthenticationError"
    assert not any(key["pinned"] for key in _tuner_state(serve_app)["keys"]), "a refused pin changed nothing"
    big = ('{"model": "' + MODEL + '", "prompt": "' + "x" * (4 * 2**20) + '"}').encode()
    response = httpx.post(
        f"{serve_app}/v1/completions", content=big, timeout=30, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "ingress.max_body_bytes" in response.json()["error"]["message"]
    response = httpx.post(
        f"{serve_app}/v1/completions",
        content=b'{"model": "' + MODEL.encode() + b'", "prompt": "\xff"}',
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and "not valid UTF-8" in response.json()["error"]["message"]


def test_the_control_key_empties_every_pools_prefix_cache(serve_app, ray_cluster):
    url = f"{serve_app}/v1/spec/reset_prefix_cache"
    assert httpx.post(url, json={"model": MODEL}, timeout=30).status_code == 401
    response = httpx.post(url, json={"model": "gpt-5"}, headers=CONTROL_AUTH, timeout=30)
    assert response.status_code == 404 and "gpt-5" in response.json()["error"]["message"]
    body = {"model": MODEL, "prompt": CODE * 8, "max_tokens": 1}
    # One settled reading after each call is the next call's "before" (each waits ~16 s for quiet).
    hits = [quiet_pool_counters(ray_cluster["metrics_url"], PLAIN_POOL)["prefix_cache_hits"]]

    def hits_of_a_call() -> float:
        assert (
            httpx.post(
                f"{serve_app}/v1/completions", json=body, headers={"x-spec-pool": PLAIN_POOL}, timeout=60
            ).status_code
            == 200
        )
        hits.append(quiet_pool_counters(ray_cluster["metrics_url"], PLAIN_POOL)["prefix_cache_hits"])
        return hits[-1] - hits[-2]

    hits_of_a_call()
    assert hits_of_a_call() > 0  # the same prompt again: its blocks were cached
    response = httpx.post(url, json={"model": MODEL}, headers=CONTROL_AUTH, timeout=60)
    assert response.status_code == 200
    assert response.json()["replicas_reset"] == {PLAIN_POOL: 1, ROUTED_POOL: 1, DRAFT_POOL: 1}
    assert hits_of_a_call() == 0


def test_a_burst_past_the_limit_is_refused_with_retry_after_and_the_app_recovers(serve_app, prometheus):
    limit = AppConfig.model_validate(local_args()).ingress.overload.max_in_flight
    body = {"model": MODEL, "prompt": CODE, "max_tokens": 48, "temperature": 0.0}

    async def burst():
        async with httpx.AsyncClient(base_url=serve_app, timeout=180) as client:
            return await asyncio.gather(*[client.post("/v1/completions", json=body) for _ in range(limit + 8)])

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 429]
    assert set(codes) == {200, 429} and codes.count(200) >= limit, codes
    assert all(r.headers["retry-after"] == "2" and r.json()["error"]["type"] == "RateLimitError" for r in refused)
    after = httpx.post(f"{serve_app}/v1/completions", json=body, timeout=60)
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] > 0
    # The operator sees it: the dashboard's refusals panel, from a real Prometheus.
    [refusals] = panel_series(prometheus, "Refused over the in-flight limit")
    assert "429" in {s["metric"]["status"] for s in refusals}


def test_per_class_acceptance_adds_up_to_the_engine_counters(openai_client, ray_cluster):
    """The routed proposer's books per (class, method) agree with vLLM's own counters."""
    _complete(openai_client, "ngram", headers={"x-request-class": "agentic"}, prompt=CODE_EDIT)
    url = ray_cluster["metrics_url"]

    def books_match_engine():
        text = scrape(url)
        engine = per_pool(text).get(ROUTED_POOL, {})
        by_class: dict[tuple[str, str], dict[str, float]] = {}
        for key in ("drafts", "draft_tokens", "accepted_tokens"):
            for labels, value in samples(text, f"ray_specserve_spec_{key}_total"):
                if labels["pool"] == ROUTED_POOL:
                    by_class.setdefault((labels["request_class"], labels["method"]), {})[key] = value
        totals = {
            key: sum(v.get(key, 0) for v in by_class.values()) for key in ("drafts", "draft_tokens", "accepted_tokens")
        }
        if ("agentic", "ngram") in by_class and all(totals[k] == engine.get(k) for k in totals):
            return by_class
        return None

    by_class = wait_until(books_match_engine, 90, "per-class counters to add up to the routed engine's", 3)
    assert by_class[("agentic", "ngram")]["drafts"] > 0
    assert all(method != "none" for _, method in by_class)  # "none" never drafts


def test_bad_k_is_400(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        _complete(openai_client, "ngram", headers={"x-spec-k": "99"})
    assert "x-spec-k must be an integer from 1 to 8" in _error_body(info.value)["message"]


def test_missing_body_field_is_400(serve_app):
    response = httpx.post(f"{serve_app}/v1/chat/completions", json={"model": MODEL}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_prometheus_metrics_tell_pools_apart(openai_client, ray_cluster):
    for method in POOL_OF:
        _complete(openai_client, method, prompt=CODE_EDIT)
    url = ray_cluster["metrics_url"]

    def spec_counters_of_every_pool():
        text = scrape(url)
        pools = per_pool(text)
        served = {labels["pool"] for labels, _ in samples(text, "ray_specserve_requests_total")}
        if set(POOL_OF.values()) <= served and all(pools.get(p, {}).get("requests", 0) > 0 for p in POOL_OF.values()):
            return text, pools
        return None

    text, pools = wait_until(spec_counters_of_every_pool, 90, "every pool's vLLM counters, joined to its pool", 3)
    assert pools[PLAIN_POOL]["drafts"] == 0  # no speculation, no drafts
    assert pools[DRAFT_POOL]["drafts"] > 0 and pools[DRAFT_POOL]["accepted_tokens"] > 0
    assert pools[ROUTED_POOL]["drafts"] > 0
    positions = {
        labels["position"] for labels, _ in samples(text, "ray_vllm_spec_decode_num_accepted_tokens_per_pos_total")
    }
    assert positions >= {"0", "1", "2"}
    assert samples(text, "ray_vllm_time_to_first_token_seconds_count")
    assert samples(text, "ray_specserve_generated_tokens_total")


def test_the_router_sends_a_class_where_its_evidence_says(openai_client, serve_app, ray_cluster):
    """Summaries run on prompt lookup and ngram_or_draft until the spec tuner has evidence for
    both; a summary sent with no method then gets what GET /v1/spec/router says, and the pool
    that serves it counts it in its own vLLM request counter."""
    summarize = {"x-request-class": "summarize"}
    methods = ("ngram_or_draft", "ngram")

    def evidence_for_both():
        for method in methods:
            _complete(openai_client, method, headers=summarize, prompt=CODE_EDIT)
        options = httpx.get(f"{serve_app}/v1/spec/router", timeout=10).json()[MODEL]["summarize"]["options"]
        return options if all(options[m]["goodput"] for m in methods) else None

    options = wait_until(evidence_for_both, 180, "goodput evidence for summaries on both methods", 2)
    assert all(options[m]["evidence"]["drafts"] > 0 for m in methods)

    def plan() -> str:
        return httpx.get(f"{serve_app}/v1/spec/router", timeout=10).json()[MODEL]["summarize"]["method"]

    model = AppConfig.model_validate(local_args()).models[0]

    def routed_by_the_table():
        method = plan()
        pool = model.pool_for_method(method, by_policy=True).name
        before = settled_pool_counters(ray_cluster["metrics_url"], pool, 0)["requests"]
        response = _complete(openai_client, headers=summarize, prompt=CODE_EDIT)
        if response.headers["x-spec-reason"] != "goodput" or plan() != method:
            return None  # one of the few exploring requests, or the plan moved meanwhile: try again
        assert response.headers["x-spec-method"] == method
        assert response.headers["x-spec-pool"] == pool
        return settled_pool_counters(ray_cluster["metrics_url"], pool, before + 1)["requests"] >= before + 1

    assert wait_until(routed_by_the_table, 120, "a summary routed by the table", 0)


def test_acceptance_per_pool_class_and_method_is_one_get_away(openai_client, serve_app):
    """GET /v1/spec/acceptance: what each pool's drafts earned per request class and method, by
    vLLM's definitions (rate: accepted over proposed; mean length: 1 + accepted per draft)."""
    summarize = {"x-request-class": "summarize"}

    def rows_for_both():
        for method in ("ngram", "draft_model"):
            _complete(openai_client, method, headers=summarize, prompt=CODE_EDIT)
        table = httpx.get(f"{serve_app}/v1/spec/acceptance", timeout=10).json()
        rows = {
            (pool.split("/")[-1], r["method"]): r
            for pool, pool_rows in table.items()
            for r in pool_rows
            if r["request_class"] == "summarize" and r["drafts"] > 0
        }
        wanted = [(ROUTED_POOL, "ngram"), (DRAFT_POOL, "draft_model")]
        return [rows[key] for key in wanted] if all(key in rows for key in wanted) else None

    for row in wait_until(rows_for_both, 180, "acceptance rows for summaries on both pools", 2):
        assert 0 <= row["accepted_tokens"] <= row["draft_tokens"]
        assert row["acceptance_rate"] == pytest.approx(row["accepted_tokens"] / row["draft_tokens"], rel=1e-3)
        assert row["mean_acceptance_length"] == pytest.approx(1 + row["accepted_tokens"] / row["drafts"], abs=0.01)


def test_no_log_or_metric_of_the_run_holds_prompt_text(serve_app, ray_cluster):
    """Prompts stay out of the logs (every process's, Ray's and vLLM's) and the metrics; the
    requests themselves are logged (by id), so the logs were written when they are searched."""
    secret = f"do-not-log-{uuid.uuid4().hex}"
    ids = []
    for path, body in (
        ("completions", {"prompt": f"{secret}\ndef main():"}),
        ("chat/completions", {"messages": [{"role": "user", "content": secret}]}),
    ):
        response = httpx.post(f"{serve_app}/v1/{path}", json={"model": MODEL, "max_tokens": 4, **body}, timeout=120)
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-request-id"])

    def logged(text: str) -> bool:
        return any(text in f.read_text(errors="replace") for f in ray_cluster["logs"].rglob("*") if f.is_file())

    wait_until(lambda: all(logged(i) for i in ids), 60, "the requests' ids in the run's logs")
    assert not logged(secret)
    assert secret not in httpx.get(ray_cluster["metrics_url"], timeout=30).text
