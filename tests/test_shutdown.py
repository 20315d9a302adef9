"""Stopping the app drains it: `python -m cluster.processes stop` (what Ctrl-C or SIGTERM to
scripts/run_local.sh runs) lets a stream in flight finish, then ends every process of the run.
Runs last (`ends_app`): it shuts the session's shared app down."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from cluster.processes import run_processes, stop_run
from tests.helpers import MODEL

TOKENS = 200


@pytest.mark.ends_app
def test_stopping_the_run_finishes_the_streams_in_flight_and_ends_every_process(serve_app, ray_cluster):
    body = {
        "model": MODEL,
        "prompt": "def main():\n",
        "max_tokens": TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events, stopping, stopped = [], threading.Event(), {}

    def stop():
        stopped["message"] = stop_run(ray_cluster["run_id"], ray_cluster["address"])

    stopper = threading.Thread(target=stop)
    with httpx.stream("POST", f"{serve_app}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[len("data: ") :]))
            if not stopping.is_set() and len(events) >= 5:  # the stream is running: stop the run now
                stopping.set()
                stopper.start()
    stopper.join(timeout=300)
    assert stopping.is_set() and not stopper.is_alive()
    assert events[-1]["usage"]["completion_tokens"] == TOKENS, events[-1]
    assert "drained ['specserve']" in stopped["message"], stopped
    assert not run_processes(ray_cluster["run_id"]), "processes of the run outlived the stop"
