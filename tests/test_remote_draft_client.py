"""The target side's fallbacks, against a stand-in handle (the real draft worker is in test_draft_worker.py)."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.contract import DraftEndpoint
from serve_app.proposer.remote_draft import RemoteDraftClient

ENDPOINT = DraftEndpoint(gcs_address="unused", app_name="app", deployment="draft", deadline_s=0.05, retry_after_s=30)


class _Response:
    def __init__(self, outcome):
        self.outcome, self.cancelled, self.timeout_s = outcome, False, None

    def result(self, timeout_s):
        self.timeout_s = timeout_s
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def cancel(self):
        self.cancelled = True


class _Handle:
    """Answers each call with the next outcome; records what it was sent."""

    def __init__(self, *outcomes):
        self.outcomes, self.calls, self.responses = list(outcomes), [], []
        self.propose = self

    def remote(self, contexts, ks):
        self.calls.append((contexts, ks))
        self.responses.append(_Response(self.outcomes.pop(0)))
        return self.responses[-1]


CONTEXTS = [np.array([1, 2, 3], dtype=np.int32), np.array([4, 5], dtype=np.int32)]


def test_one_call_carries_every_row_and_its_k():
    handle = _Handle([[7, 8], [9]])
    client = RemoteDraftClient(ENDPOINT, handle)
    assert client.propose(CONTEXTS, [2, 1]) == [[7, 8], [9]]
    assert len(handle.calls) == 1 and handle.calls[0][1] == [2, 1]
    assert handle.responses[0].timeout_s == pytest.approx(0.05)
    stats = client.stats.drain()
    assert (stats["calls"], stats["rows"]) == (1, 2)
    assert [batch for _, batch in stats["observations"]] == [2]
    assert client.stats.drain()["observations"] == [], "a read drains the latency observations"


@pytest.mark.parametrize("failure, counter", [(TimeoutError(), "timeouts"), (RuntimeError("replica died"), "errors")])
def test_a_failed_call_gives_no_drafts_and_rests_the_pool(failure, counter):
    handle = _Handle(failure)
    client = RemoteDraftClient(ENDPOINT, handle)
    assert client.propose(CONTEXTS, [2, 2]) is None
    assert handle.responses[0].cancelled == (counter == "timeouts")
    # Within retry_after_s the pool is not called again: the step decodes plainly at once.
    assert client.propose(CONTEXTS, [2, 2]) is None
    assert len(handle.calls) == 1
    stats = client.stats.drain()
    assert (stats[counter], stats["unavailable"], stats["calls"]) == (1, 1, 0)


def test_speculation_resumes_after_the_rest():
    handle = _Handle(TimeoutError(), [[1], [2]])
    client = RemoteDraftClient(DraftEndpoint(**{**ENDPOINT.__dict__, "retry_after_s": 0.0}), handle)
    assert client.propose(CONTEXTS, [1, 1]) is None
    assert client.propose(CONTEXTS, [1, 1]) == [[1], [2]]


@pytest.mark.parametrize("outcome", [[[5]], TimeoutError()])
def test_warm_up_waits_past_the_deadline_and_leaves_the_books_alone(outcome):
    handle = _Handle(outcome, [[1], [2]])
    client = RemoteDraftClient(ENDPOINT, handle)
    assert client.warm_up(timeout_s=60) == (not isinstance(outcome, Exception))
    assert handle.responses[0].timeout_s == 60
    assert handle.responses[0].cancelled == isinstance(outcome, Exception)
    # A warm-up that got no answer does not rest the pool: the first step calls it again.
    assert client.propose(CONTEXTS, [1, 1]) == [[1], [2]]
    stats = client.stats.drain()
    assert (stats["calls"], stats["timeouts"], stats["unavailable"]) == (1, 0, 0)
