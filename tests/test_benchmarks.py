"""The arithmetic the benchmarks report with, and a smoke run of the side-by-side benchmark."""

from __future__ import annotations

import pytest

from cluster.benchmarks.http_load import RequestResult, summarize
from cluster.testmodels.build import DEFAULT_OUT


def test_summary_counts_tokens_per_second_and_time_per_output_token():
    results = [
        RequestResult(ttft_s=0.5, e2e_s=2.5, completion_tokens=5, headers={}),
        RequestResult(ttft_s=1.0, e2e_s=1.0, completion_tokens=1, headers={}),
    ]  # no TPOT from one token
    row = summarize(results, wall_s=3.0)
    assert row["tokens_per_s"] == pytest.approx(2.0)
    assert row["tpot_p50_ms"] == pytest.approx(500.0)
    assert row["ttft_p50_ms"] == pytest.approx(750.0)


def test_per_class_ceiling_puts_each_class_on_its_fastest_arm_none_included():
    from cluster.benchmarks.router_mix import per_class_ceiling

    def arm(name, chat, code):
        return {
            "arm": name,
            "seconds_per_class": {"chat": {"requests": 2, "e2e_s": chat}, "code": {"requests": 1, "e2e_s": code}},
        }

    same = [arm("none", 3.0, 1.0), arm("ngram", 2.0, 2.0), arm("draft_model", 1.0, 4.0), arm("router", 0.1, 0.1)]
    # draft_model (the best single here): 2 x 1.0 + 4.0 = 6.0 s; each class's fastest: 2 x 1.0 + 1.0 (none) = 3.0 s.
    assert per_class_ceiling(same, "draft_model") == pytest.approx(2.0)


def test_peers_smoke_run_reports_every_section_from_its_measurements_and_leaves_no_process(serve_app, tmp_path):
    """The side-by-side benchmark against the running app and vLLM's own server, tiny: every arm
    at a closed-loop and a Poisson load, ratios computed from the rows, the peers' processes gone."""
    from cluster.benchmarks import peers
    from cluster.processes import run_processes

    # Two requests of 8 tokens per arm and load; one vLLM server per configuration, in turn.
    argv = ["--app-url", serve_app, "--systems", "app,vllm", "--methods", "none,ngram", "--ngram-k", "2"]
    argv += ["--concurrency", "2", "--rates", "4", "--requests", "2", "--max-tokens", "8"]
    result = peers.main([*argv, "--peer-port", str(peers.free_port()), "--out", str(tmp_path)])

    arms = {(r["system"], r["arm"], r["load"]) for r in result["rows"]}
    loads = ("concurrency 2", "rate 4")
    assert arms == {
        (s, a, load)
        for s, a in [("app", "router"), ("app", "none"), ("vllm", "none"), ("vllm", "ngram k=2")]
        for load in loads
    }
    assert all(r["completion_tokens"] == 2 * 8 and r["tokens_per_s"] > 0 for r in result["rows"])

    row = {(r["system"], r["arm"], r["load"]): r for r in result["rows"]}
    [closed] = [c for c in result["comparisons"] if c["load"] == "concurrency 2"]
    assert closed["peer"] == "vllm" and closed["best_fixed"] == "ngram k=2"
    router, best, none = (
        row[s, a, "concurrency 2"] for s, a in [("app", "router"), ("vllm", "ngram k=2"), ("vllm", "none")]
    )
    assert closed["router_vs_best_fixed"] == pytest.approx(router["tokens_per_s"] / best["tokens_per_s"])
    app_none = row["app", "none", "concurrency 2"]
    assert closed["app_none_vs_none_ttft_p50_ms"] == pytest.approx(app_none["ttft_p50_ms"] / none["ttft_p50_ms"])

    table = (tmp_path / "peers.md").read_text()
    assert "| vllm | ngram k=2 | mix | rate 4 |" in table and "router / best fixed" in table
    assert (tmp_path / "peers.png").stat().st_size > 0 and (tmp_path / "peers_latency.png").stat().st_size > 0
    assert len(result["runs"]) == 2 and not any(run_processes(run) for run in result["runs"])


def test_engine_memory_smoke_run_shows_the_primitive_cache_growth_and_its_bound(test_models, tmp_path):
    """Two real CPU engines, one per arm, each meeting 60 new step sizes: with oneDNN's cache on
    (its default) every new size past vLLM's per-layer caches adds to the live heap; off (the
    app's setting) it does not."""
    import json
    import subprocess
    import sys

    argv = ["--model-dir", str(DEFAULT_OUT / "target"), "--lengths", "60", "--rounds", "2", "--passes", "1"]
    argv += ["--max-tokens", "8", "--out", str(tmp_path)]
    subprocess.run([sys.executable, "-m", "cluster.benchmarks.engine_memory", *argv], check=True, timeout=900)
    result = json.loads((tmp_path / "engine_memory.json").read_text())
    on, off = (next(r for r in result["rows"] if r["arm"] == arm) for arm in ("cache on", "cache off"))
    assert on["mib_per_new_size"] > 0.5  # 1.27 MiB per size on the test target
    assert off["mib_per_new_size"] < 0.2
    assert [h[0] for h in result["passes"][0]["heap"]] == [0, 10, 20, 30, 40, 50, 60]
    assert all(r["tokens_per_s"][0] > 0 for r in result["rows"])
    assert "| cache off |" in (tmp_path / "engine_memory.md").read_text()
    assert (tmp_path / "engine_memory.png").stat().st_size > 0
