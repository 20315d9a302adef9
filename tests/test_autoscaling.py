"""Replica autoscaling of the engine deployments: the engines' load signals, the policy that reads
them (given Ray Serve's own autoscaling context), and the policy's reach into a live app."""

from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentID
from ray.serve.config import AutoscalingConfig, AutoscalingContext
from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from cluster.scrape import samples, scrape
from serve_app.autoscaling import engine_load
from serve_app.autoscaling.engine_load import EngineLoad, EngineLoadLogger
from serve_app.autoscaling.policy import TTFT_P90, WAITING, EngineLoadPolicy
from tests.helpers import MODEL, PLAIN_POOL, ROOT, wait_until


def test_engine_load_is_a_window_of_queue_and_ttft():
    load = EngineLoad(window_s=10)
    assert load.snapshot(now=0) == {WAITING: 0.0, TTFT_P90: 0.0}  # an idle engine
    load.record(1, waiting=4, ttfts=[0.1] * 9 + [2.0])
    load.record(2, waiting=0, ttfts=[])
    assert load.snapshot(now=5) == pytest.approx({WAITING: 2.0, TTFT_P90: 0.29})
    load.record(13, waiting=1, ttfts=[0.3])
    assert load.snapshot(now=13) == pytest.approx({WAITING: 1.0, TTFT_P90: 0.3})  # t=1 and t=2 are forgotten


def test_the_vllm_stat_logger_feeds_the_process_window(monkeypatch):
    """What vLLM hands a stat logger each step (its own stats classes) reaches the window."""
    load = EngineLoad()
    monkeypatch.setattr(engine_load, "ENGINE_LOAD", load)
    monkeypatch.setenv(engine_load.APP_ENGINE_ENV, "1")
    iteration = IterationStats()
    iteration.time_to_first_tokens_iter = [0.4, 0.6]
    EngineLoadLogger(vllm_config=None).record(SchedulerStats(num_running_reqs=8, num_waiting_reqs=3), iteration)
    EngineLoadLogger(vllm_config=None).record(None, None)  # steps without stats change nothing
    snapshot = load.snapshot(now=load._waiting[-1][0])
    assert snapshot[WAITING] == 3 and snapshot[TTFT_P90] == pytest.approx(0.58)
    assert load.steps == 2  # what the replica's stats loop watches to leave an idle engine alone


def test_the_plugin_records_nothing_in_an_engine_that_is_not_the_apps(monkeypatch):
    """vLLM loads the entry point into every engine of the environment (Ray Serve LLM's too):
    built by vLLM's own plugin loader in a process the app did not mark, the logger records nothing."""
    from vllm.v1.metrics.loggers import load_stat_logger_plugin_factories

    load = EngineLoad()
    monkeypatch.setattr(engine_load, "ENGINE_LOAD", load)
    monkeypatch.delenv(engine_load.APP_ENGINE_ENV, raising=False)
    factory = next(f for f in load_stat_logger_plugin_factories() if f.__name__ == EngineLoadLogger.__name__)
    factory(vllm_config=None).record(SchedulerStats(num_waiting_reqs=5), None)
    assert load.steps == 0 and load.snapshot(now=0)[WAITING] == 0
    monkeypatch.setenv(engine_load.APP_ENGINE_ENV, "1")
    factory(vllm_config=None).record(SchedulerStats(num_waiting_reqs=5), None)
    assert load.steps == 1


def test_only_the_apps_engine_deployments_carry_the_marker():
    from serve_app.check import load_apps
    from serve_app.llm_configs import build_draft_llm_config, build_llm_config

    for path in ("configs/local.yaml", "configs/prod.yaml"):
        for _, app in load_apps(ROOT / path):
            for model in app.models:
                configs = [build_llm_config(model, pool) for pool in model.pools]
                configs += [build_draft_llm_config(model, worker) for worker in model.draft_workers]
                for config in configs:
                    assert config.runtime_env["env_vars"][engine_load.APP_ENGINE_ENV] == "1"


def _context(current: int, in_flight: float, waiting: list[float], ttft: list[float], **config) -> AutoscalingContext:
    replicas = [f"r{i}" for i in range(current)]
    scaling = AutoscalingConfig(
        min_replicas=1, max_replicas=4, target_ongoing_requests=8, upscale_delay_s=0, downscale_delay_s=0, **config
    )
    return AutoscalingContext(
        deployment_id=DeploymentID(name="target-m-routed", app_name="specserve"),
        deployment_name="target-m-routed",
        app_name="specserve",
        current_num_replicas=current,
        target_num_replicas=current,
        running_replicas=replicas,
        total_num_requests=in_flight,
        total_queued_requests=0,
        aggregated_metrics={WAITING: dict(zip(replicas, waiting)), TTFT_P90: dict(zip(replicas, ttft))},
        raw_metrics=None,
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=4,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=None,
        config=scaling,
    )


@pytest.mark.parametrize(
    "current, in_flight, waiting, ttft, desired",
    [
        (2, 8, [0, 0], [0.2, 0.3], 1.0),  # nothing waits, TTFT fine: Ray Serve's in-flight rule (8 / 8 per replica)
        (2, 4, [3, 1], [0.2, 0.3], 3),  # 2 waiting per replica: one more replica, whatever the in-flight rule says
        (2, 4, [0, 0], [0.5, 1.5], 3),  # the slowest replica 1.5x over its TTFT objective: 1.5x the replicas
        (2, 4, [0, 0], [0.5, 9.0], 4),  # far over it: at most double
        (2, 40, [0, 0], [0.5, 1.5], 5.0),  # the in-flight rule asks for more still: it wins
        (3, 2, [0.5, 0, 0], [0.2] * 3, 3),  # a little waiting: hold, no scale-down
        (3, 2, [0, 0, 0], [0.6, 0.2, 0.2], 3),  # TTFT over half its objective: hold
    ],
)
def test_policy_adds_replicas_for_queues_and_slow_first_tokens(current, in_flight, waiting, ttft, desired):
    policy = EngineLoadPolicy(ttft_slo_s=1.0, max_waiting_requests=1.0)
    got, state = policy(_context(current, in_flight, waiting, ttft))
    assert got == desired
    assert state[TTFT_P90] == max(ttft)


def test_policy_without_a_ttft_objective_watches_the_queue_only():
    policy = EngineLoadPolicy(ttft_slo_s=None, max_waiting_requests=1.0)
    assert policy(_context(2, 4, [0, 0], [30.0, 30.0]))[0] == 0.5
    assert policy(_context(2, 4, [2, 2], [0.1, 0.1]))[0] == 3


def test_live_engines_report_their_load_to_the_policy(openai_client, ray_cluster):
    """Engine stat logger -> replica's record_autoscaling_stats -> Serve controller -> the policy,
    which exports what it read: a request's time to first token shows up for the pool that served it."""
    deployment = "target-tiny-llama-plain"

    def ttft_seen():
        openai_client.completions.create(
            model=MODEL, prompt="def main(argv):\n", max_tokens=4, extra_headers={"x-spec-pool": PLAIN_POOL}
        )
        text = scrape(ray_cluster["metrics_url"])
        seen = [
            v
            for labels, v in samples(text, "ray_specserve_autoscaling_ttft_p90_seconds")
            if labels.get("deployment") == deployment
        ]
        desired = [
            v
            for labels, v in samples(text, "ray_serve_autoscaling_desired_replicas")
            if labels.get("deployment") == deployment
        ]
        return seen and seen[0] > 0 and desired and (seen[0], desired[0])

    ttft, desired = wait_until(ttft_seen, 120, f"the autoscaling policy to read a TTFT for {deployment}", 2)
    assert 0 < ttft < 30
    assert desired <= 1  # a trickle of requests adds no replica
