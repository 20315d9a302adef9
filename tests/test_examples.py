"""Every recipe in configs/examples/ passes `serve_app.check` offline (no hub, an empty Hugging
Face cache: shapes from the catalogue), fits its GPUs, and hands its engine the vLLM JSON it
was written with."""

from __future__ import annotations

import pytest
import yaml

from serve_app.check import load_apps
from serve_app.check import main as check_main
from serve_app.config.placement import plan_app
from tests.helpers import ROOT

EXAMPLES = sorted((ROOT / "configs" / "examples").glob("*.yaml"))
# What vLLM would run for each recipe (the method it names or vLLM infers) and its GPUs.
EXPECTED = {
    "qwen3-8b-draft-qwen3-0.6b.yaml": ("draft_model", 1),
    "llama-3.1-8b-draft-llama-3.2-1b.yaml": ("draft_model", 1),
    "opt-6.7b-draft-opt-125m.yaml": ("draft_model", 1),
    "gemma-2-9b-draft-gemma-2-2b.yaml": ("draft_model", 1),
    "llama-3.1-8b-ngram.yaml": ("ngram", 1),
    "eagle-llama-3-8b.yaml": ("eagle", 1),
    "llama-3-70b-mlp-speculator.yaml": ("mlp_speculator", 4),
    "llama-3.1-70b-draft-llama-3.2-1b.yaml": ("draft_model", 4),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))


def test_every_recipe_has_an_example():
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_example_validates_fits_and_keeps_its_vllm_json(path, capsys):
    assert check_main([str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    [(_, app)] = load_apps(path)
    [placement] = plan_app(app)
    method, gpus = EXPECTED[path.name]
    assert placement.fits and placement.method == method and placement.devices_per_replica == gpus
    written = yaml.safe_load(path.read_text())["applications"][0]["args"]["models"][0]["pools"][0]["speculation"]
    engine = app.models[0].pools[0].speculation.vllm_config()
    assert {k: v for k, v in engine.items() if k != "method"} == {
        k: v for k, v in written["speculative_config"].items() if k != "method"
    }
    assert engine["method"] == written["speculative_config"].get("method", method)


def test_the_plan_counts_a_draft_at_draft_tp_1_whole_on_every_gpu():
    """The 70B recipe's 1B draft at draft_tensor_parallel_size 1: 2.3 GiB per GPU, not a quarter."""
    [(_, app)] = load_apps(ROOT / "configs" / "examples" / "llama-3.1-70b-draft-llama-3.2-1b.yaml")
    [placement] = plan_app(app)
    assert placement.drafter_gib == pytest.approx(1.24e9 * 2 / 2**30, rel=0.02)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_examples_pool_reports_its_acceptance_to_the_tuner(path):
    """Without a router, a speculative pool of one method still reports its per-class draft
    counts, so GET /v1/spec/acceptance has them."""
    [(_, app)] = load_apps(path)
    model = app.models[0]
    assert model.router is None and model.reporting_pools() == model.pools
    # so the app runs a tuner for the acceptance route alone
    assert app.tuner_roles() == {"tuned": False, "planned": False, "speculating": True, "reporting": True}


def test_a_pool_without_speculation_reports_only_where_the_tuner_routes():
    [(_, app)] = load_apps(ROOT / "configs" / "local.yaml")
    model = app.models[0]
    assert {p.speculation.method for p in model.reporting_pools()} == {"none", "draft_model"}  # goodput router
    unrouted = model.model_copy(update={"router": None})
    assert {p.speculation.method for p in unrouted.reporting_pools()} == {"draft_model"}
    assert all(app.tuner_roles().values())
    plain = model.model_copy(update={"router": None, "pools": [model.pool("plain")]})
    assert not any(app.model_copy(update={"models": [plain]}).tuner_roles().values())  # no tuner at all
