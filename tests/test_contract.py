"""What crosses between the replica, the worker extension, the proposer and the tuner has one
declared shape (`serve_app/contract.py`): each producer builds exactly its keys, and the worker
extension implements every RPC the replica calls by name."""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict
from typing import get_type_hints

from serve_app import contract
from serve_app.observability.engine_steps import EngineSteps
from serve_app.proposer.acceptance import AcceptanceBook
from serve_app.proposer.remote_draft import DraftCallStats
from serve_app.proposer.step_timer import StepTimer
from serve_app.proposer.worker_extension import SpecControlExtension


def keys(shape) -> set[str]:
    return set(get_type_hints(shape))


def test_the_worker_extension_implements_every_rpc_with_the_declared_signature():
    declared = {n for n, _ in inspect.getmembers(contract.SpecControl, inspect.isfunction) if not n.startswith("_")}
    assert declared == {
        contract.ATTACH_RPC,
        contract.ACCEPTANCE_RPC,
        contract.TIMINGS_RPC,
        contract.SET_K_RPC,
        contract.DRAFT_STATS_RPC,
    }
    for name in declared:
        assert inspect.signature(getattr(SpecControlExtension, name)) == inspect.signature(
            getattr(contract.SpecControl, name)
        ), name


def test_a_routed_proposers_books_and_timings_have_the_declared_keys():
    book = AcceptanceBook()
    book.step(["a"], [[1]], [("code_edit", "ngram", 3, 3)])
    book.step(["a"], [[1, 2, 3]], [("code_edit", "ngram", 3, 0)])
    [tally] = book.snapshot()
    assert set(tally) == keys(contract.AcceptanceTally)
    assert tally["accepted_tokens"] == 2 and tally["asked_per_position"] == [1, 1, 1]

    timer = StepTimer()
    timer.drafted("ngram", rows=1, k=3, seconds=0.001)
    timer.step_done(["a"], [[1]], 0, time.perf_counter())
    timer.step_done(["a"], [[1, 2]], 1, time.perf_counter())
    timings = timer.drain()
    assert set(timings) == keys(contract.StepTimings)
    assert set(timings["steps"][0]) == keys(contract.StepSample)
    assert set(timings["drafts"][0]) == keys(contract.DraftSample)
    assert timer.drain() == {"steps": [], "drafts": []}  # reading drains

    stats = DraftCallStats(calls=1, rows=2, observations=[(0.01, 2)])
    assert set(stats.drain()) == keys(contract.DraftCallReport) and stats.observations == []


def test_a_fixed_method_pools_report_has_the_declared_keys():
    steps = EngineSteps()
    steps.started("chat")
    steps.record(0.0, 1, [1, 1], [1, 0])
    steps.record(0.05, 1, [1, 1], [1, 1])
    report = steps.report()
    assert set(report) == keys(contract.EngineReport)
    assert set(report["tallies"][0]) == keys(contract.ClassShare)
    assert set(report["steps"][0]) == keys(contract.EngineStep)


def test_the_draft_endpoint_survives_the_trip_as_a_dict():
    endpoint = contract.DraftEndpoint("10.0.0.1:6379", "app", "draft", deadline_s=0.2, retry_after_s=5.0)
    assert contract.DraftEndpoint(**asdict(endpoint)) == endpoint


def test_a_routed_report_is_a_step_timings_with_the_books():
    assert keys(contract.RoutedReport) == keys(contract.StepTimings) | {"tallies", "applied"}
