"""The separately placed draft worker, live: a real draft deployment drafting for a real target.

The routed pool of configs/local.yaml drafts `remote_draft` requests through the draft worker
deployment `draft-tiny-llama-tiny-draft`; every assertion here is on what the app itself
reports (responses, vLLM's engine counters, the app's draft-call metrics).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from cluster.benchmarks.http_load import run_load
from cluster.scrape import quiet_pool_counters
from tests.helpers import MODEL, PLAIN_POOL, ROUTED_POOL, complete, panel_series, replica_processes, wait_until

# k pinned: these tests are about the draft worker, and the spec tuner could set k to 0 on CPU.
REMOTE = {"x-spec-method": "remote_draft", "x-spec-k": "4"}
PLAIN = {"x-spec-pool": PLAIN_POOL}
DRAFT_REPLICA_TITLE = "ServeReplica:specserve:draft-tiny-llama-tiny-draft"
PROMPT = "def parse_header(line):\n    key, _, value = line.partition(':')\n"


def _text(openai_client, headers: dict, max_tokens: int = 48, prompt: str = PROMPT) -> str:
    """The text of a completion that runs its full length (no early end of sequence)."""
    raw = complete(openai_client, headers, prompt=prompt, max_tokens=max_tokens, extra_body={"ignore_eos": True})
    return raw.parse().choices[0].text


def _routed_counters(ray_cluster) -> dict[str, float]:
    return quiet_pool_counters(ray_cluster["metrics_url"], ROUTED_POOL)


def _delta(before: dict, after: dict) -> dict:
    return {key: after[key] - before[key] for key in after}


def test_remote_drafts_are_lossless_and_accepted(openai_client, ray_cluster):
    # The first remote-draft request after the app starts pays the draft engine's one-time costs
    # (its first prefill and decode shapes), which can pass the 200 ms deadline on two shared
    # cores (seen once in CI: 29 fallbacks); what is asserted below is the steady state.
    _text(openai_client, REMOTE, prompt="import os\n")
    expected = _text(openai_client, PLAIN)
    fallbacks = []
    # One late call on a busy CI host (a GC pause, an engine starting) skips the worker for
    # retry_after_s: a run of fallbacks. Losslessness holds on every attempt; a request drafted
    # without any fallback must happen within a few, or the deadline does not fit this host.
    for _ in range(3):
        before = _routed_counters(ray_cluster)
        assert _text(openai_client, REMOTE) == expected
        delta = _delta(before, _routed_counters(ray_cluster))
        assert delta["draft_calls"] > 0
        # vLLM's own counters of the target engine: the remote drafts were verified and accepted.
        assert delta["drafts"] > 0 and delta["accepted_tokens"] > 0
        fallbacks.append(delta["draft_fallbacks"])
        if not fallbacks[-1]:
            break
    assert fallbacks[-1] == 0, f"every attempt fell back to plain decoding at some step: {fallbacks}"


def test_one_draft_call_per_step_carries_every_request(serve_app, ray_cluster):
    before = _routed_counters(ray_cluster)
    bodies = [
        {
            "model": MODEL,
            "prompt": f"{PROMPT}# variant {i}\n",
            "max_tokens": 48,
            "temperature": 0.0,
            "ignore_eos": True,
        }
        for i in range(4)
    ]
    results, _ = asyncio.run(run_load(serve_app, bodies, concurrency=4, headers=REMOTE))
    assert all(r.completion_tokens == 48 for r in results)
    delta = _delta(before, _routed_counters(ray_cluster))
    # One call per request per step would average 1 row per call; 4 requests decoding together
    # share each step's call (prefills and finishes make a few smaller ones).
    assert delta["draft_calls"] > 0
    assert delta["draft_rows"] / delta["draft_calls"] >= 2.5, delta


@pytest.mark.disrupts_app
def test_killing_the_draft_worker_fails_no_request(serve_app, openai_client, ray_cluster, prometheus):
    expected = _text(openai_client, PLAIN, max_tokens=400)
    before = _routed_counters(ray_cluster)
    draft_worker = replica_processes(DRAFT_REPLICA_TITLE)
    text, killed = [], False
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 400,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", f"{serve_app}/v1/completions", json=body, headers=REMOTE, timeout=300) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            text += [c["text"] for c in chunk.get("choices", [])]
            if not killed and len(text) >= 20:
                for proc in draft_worker:
                    proc.kill()
                killed = True
    assert killed, "the generation ended before the draft worker could be killed"
    assert "".join(text) == expected
    assert _delta(before, _routed_counters(ray_cluster))["draft_fallbacks"] > 0
    [fallbacks] = panel_series(prometheus, "Fallbacks to plain decoding by reason")
    assert ROUTED_POOL in {s["metric"]["pool"] for s in fallbacks}

    # Serve starts a new draft replica; speculation through it resumes without a target restart.
    wait_until(
        lambda: httpx.get(f"{serve_app}/health", timeout=5).status_code == 200, 600, "the draft worker to be replaced"
    )
    resumed = _routed_counters(ray_cluster)

    def drafting_again():
        _text(openai_client, REMOTE)
        return _delta(resumed, _routed_counters(ray_cluster))["draft_calls"] > 0

    wait_until(drafting_again, 120, "remote drafts to resume", interval_s=0)
