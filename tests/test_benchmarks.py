"""The arithmetic the benchmarks report with (their runs need the live app: README)."""

from __future__ import annotations

import pytest

from cluster.benchmarks.http_load import RequestResult, summarize


def test_summary_counts_tokens_per_second_and_time_per_output_token():
    results = [
        RequestResult(ttft_s=0.5, e2e_s=2.5, completion_tokens=5, headers={}),
        RequestResult(ttft_s=1.0, e2e_s=1.0, completion_tokens=1, headers={}),
    ]  # no TPOT from one token
    row = summarize(results, wall_s=3.0)
    assert row["tokens_per_s"] == pytest.approx(2.0)
    assert row["tpot_p50_ms"] == pytest.approx(500.0)
    assert row["ttft_p50_ms"] == pytest.approx(750.0)
