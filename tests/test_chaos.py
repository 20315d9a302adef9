"""Faults the app must survive, on the live app: a target replica killed mid-stream, and the
spec tuner killed. (A killed draft worker: tests/test_draft_worker.py.) Each fault is a SIGKILL
of the replica's process and its vLLM engine processes, what a lost node or an OOM kill does.
These tests run after the others (`disrupts_app`): the app they leave has new replicas."""

from __future__ import annotations

import json
import time

import httpx
import psutil
import pytest

from tests.helpers import MODEL, PLAIN_POOL, replica_processes, wait_until

APP_RECOVERY_S = 600
PLAIN = {"x-spec-pool": PLAIN_POOL}
BODY = {"model": MODEL, "prompt": "def main():\n", "temperature": 0.0, "ignore_eos": True}


def _kill_replica(title: str) -> None:
    procs = replica_processes(title)
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=30)


@pytest.mark.disrupts_app
def test_a_killed_target_replica_ends_its_streams_with_an_error_and_is_replaced(serve_app):
    events, killed, started = [], False, time.monotonic()
    with httpx.stream(
        "POST",
        f"{serve_app}/v1/completions",
        json={**BODY, "max_tokens": 400, "stream": True},
        headers=PLAIN,
        timeout=120,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[len("data: ") :]))
            if not killed and len(events) >= 10:
                _kill_replica("ServeReplica:specserve:target-tiny-llama-plain")
                killed = True
    assert killed, "the stream ended before the replica could be killed"
    assert time.monotonic() - started < 120, "the stream hung after its replica died"
    assert events[-1].get("error", {}).get("type") == "ServiceUnavailableError", (
        f"the stream ended without saying it was cut: {events[-1]}"
    )
    assert "retry" in events[-1]["error"]["message"]
    assert not any(c.get("finish_reason") for e in events for c in e.get("choices", []))

    # Serve starts a new replica (a new engine) and the pool serves again. /health says 200 until
    # Serve's controller notices the death, so the signal is a request to this pool; one that
    # waits too long for the new engine is abandoned and sent again.
    def plain_pool_serves():
        response = httpx.post(f"{serve_app}/v1/completions", json={**BODY, "max_tokens": 8}, headers=PLAIN, timeout=60)
        return response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 8

    wait_until(plain_pool_serves, APP_RECOVERY_S, "the plain pool's replica to be replaced")


@pytest.mark.disrupts_app
def test_a_dead_tuner_stops_no_request_and_comes_back(serve_app):
    _kill_replica("ServeReplica:specserve:spec-tuner")
    # Targets keep their last k and the ingress its last route table: requests of every method
    # succeed while the tuner is gone or new.
    for method in ("ngram", "remote_draft", "draft_model", "none"):
        response = httpx.post(
            f"{serve_app}/v1/completions",
            json={**BODY, "max_tokens": 16},
            headers={"x-spec-method": method},
            timeout=120,
        )
        assert response.status_code == 200, (method, response.text)

    def reports_again():
        state = httpx.get(f"{serve_app}/v1/spec/tuner", timeout=10)
        return state.status_code == 200 and state.json()["tiny-llama/routed"]["applied"]

    # The new tuner hears from the routed replicas again and sends them its k.
    wait_until(reports_again, 120, "the routed replicas to report to a new tuner")
