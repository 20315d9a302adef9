"""Config validation: every error names the field and the fix; both shipped configs pass."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml

from serve_app.check import load_apps
from serve_app.config.schema import AppConfig
from tests.helpers import LOCAL_CONFIG, PROD_CONFIG, ROOT, config_args, pool_of, validation_error


def _prod_with(**model_changes) -> dict:
    args = copy.deepcopy(config_args())
    args["models"][0].update(model_changes)
    return args


def test_unknown_speculation_method_names_field_and_choices():
    args = _prod_with()
    pool_of(args, "routed")["speculation"]["method"] = "telepathy"
    msg = validation_error(args)
    assert "models.0.pools.1.speculation.method" in msg
    assert "'ngram'" in msg and "'eagle3'" in msg and "'none'" in msg


def test_missing_draft_model():
    args = _prod_with()
    del pool_of(args, "eagle3")["speculation"]["draft"]
    msg = validation_error(args)
    assert "models.0.pools.0.speculation" in msg
    assert "needs a draft model: set draft.source" in msg


@pytest.mark.parametrize("k", [0, 17, -1])
def test_k_out_of_range(k):
    args = _prod_with()
    pool_of(args, "routed")["speculation"]["num_speculative_tokens"] = k
    msg = validation_error(args)
    assert "models.0.pools.1.speculation.num_speculative_tokens" in msg


def test_tp_must_divide_attention_heads():
    msg = validation_error(_prod_with(tensor_parallel_size=3))
    assert "tensor_parallel_size 3 does not divide the 64 attention heads" in msg
    assert "use a divisor of 64" in msg


def test_model_that_does_not_fit_the_gpus():
    # 70B bf16 over 2 x 24 GB L4s: 66 GB of weights cannot fit in 2 x 21.6 GB.
    msg = validation_error(_prod_with(tensor_parallel_size=2, accelerator={"kind": "gpu", "type": "L4"}))
    assert "pool 'eagle3' does not fit" in msg
    assert "raise tensor_parallel_size" in msg


def test_long_context_that_does_not_fit():
    msg = validation_error(_prod_with(max_model_len=2_000_000))
    assert "DOES NOT FIT" in msg and "max_model_len needs 2000000" in msg


def test_draft_vocabulary_must_match_target(tmp_path, test_models):
    draft_dir = tmp_path / "other-draft"
    draft_dir.mkdir()
    cfg = json.loads((ROOT / ".cache/testmodels/draft/config.json").read_text())
    cfg["vocab_size"] = 4096
    (draft_dir / "config.json").write_text(json.dumps(cfg))
    args = copy.deepcopy(config_args(LOCAL_CONFIG))
    pool_of(args, "draft")["speculation"]["draft"]["source"] = str(draft_dir)
    msg = validation_error(args)
    assert "vocabulary size 4096 differs from the target's 2048" in msg


def test_local_draft_methods_need_the_routed_pools_draft():
    args = copy.deepcopy(config_args(LOCAL_CONFIG))
    del pool_of(args, "routed")["speculation"]["draft"]
    msg = validation_error(args)
    assert "(summarize) allows method 'ngram_or_draft' but no pool the router may send to serves it" in msg
    assert "with a draft for local_draft, ngram_or_draft" in msg


def test_routed_pool_runs_llama_drafts_only(tmp_path, test_models):
    draft_dir = tmp_path / "opt-draft"
    draft_dir.mkdir()
    cfg = json.loads((ROOT / ".cache/testmodels/draft/config.json").read_text())
    (draft_dir / "config.json").write_text(json.dumps({**cfg, "model_type": "opt"}))
    args = copy.deepcopy(config_args(LOCAL_CONFIG))
    pool_of(args, "routed")["speculation"]["draft"]["source"] = str(draft_dir)
    msg = validation_error(args)
    assert "pools[1].speculation.draft: a routed pool runs its draft model itself, for llama" in msg
    assert "(this one is 'opt')" in msg


def test_unknown_hub_model_needs_architecture():
    msg = validation_error(_prod_with(source="someorg/unknown-model"))
    assert "cannot tell the shape of 'someorg/unknown-model'" in msg and "add `architecture:`" in msg


def test_unknown_field_is_rejected():
    msg = validation_error(_prod_with(tensor_paralel_size=4))
    assert "models.0.tensor_paralel_size" in msg and "Extra inputs are not permitted" in msg


def test_unknown_default_pool():
    msg = validation_error(_prod_with(default_pool="eagle5"))
    assert "default_pool 'eagle5' is not a pool" in msg


def test_shipped_configs_validate_with_the_serve_schema(test_models):
    for path in (LOCAL_CONFIG, PROD_CONFIG, ROOT / "k8s" / "rayservice.yaml"):
        [(name, app)] = load_apps(path)
        assert name == "specserve" and app.models


def _check(*paths) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serve_app.check", *map(str, paths)], capture_output=True, text=True, cwd=ROOT
    )


def test_check_cli_prints_the_plan_for_both_configs(test_models):
    result = _check(LOCAL_CONFIG, PROD_CONFIG)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tiny-llama / pool draft (speculation: draft_model)" in out
    assert "replicas 1..4, TP 4: 4 x GPU H100 per replica" in out
    assert "fits: per GPU 72.0 GiB usable = weights 32.9" in out
    assert "total GPU H100: 13 at min replicas, 43 at max replicas" in out
    # The draft worker is placed apart: half an H100 per replica, its own memory fit.
    assert "llama-3.3-70b-instruct / draft worker llama-1b (speculation: remote_draft)" in out
    assert "replicas 2..6, TP 1: 0.5 x GPU H100 per replica" in out
    assert "fits: per 0.5 GPU 36.0 GiB usable = weights 2.3" in out
    assert "tiny-llama / draft worker tiny-draft (speculation: remote_draft)" in out


def test_check_cli_fails_on_an_invalid_config(tmp_path):
    config = yaml.safe_load(PROD_CONFIG.read_text())
    config["applications"][0]["args"]["models"][0]["tensor_parallel_size"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = _check(bad)
    assert result.returncode == 1
    assert "applications[specserve].args.models.0" in result.stderr
    assert "does not divide the 64 attention heads" in result.stderr


def _draft_worker(args: dict) -> dict:
    return args["models"][0]["draft_workers"][0]


def test_pool_names_a_draft_worker_that_does_not_exist():
    args = _prod_with()
    pool_of(args, "routed")["speculation"]["draft_worker"] = "llama-8b"
    msg = validation_error(args)
    assert "pools[1].speculation.draft_worker 'llama-8b' is not a draft worker" in msg
    assert "['llama-1b']" in msg


def test_draft_worker_no_pool_uses():
    args = _prod_with()
    del pool_of(args, "routed")["speculation"]["draft_worker"]
    args["models"][0]["router"]["classes"][3]["methods"] = ["eagle3"]  # chat no longer drafts remotely
    assert "draft_workers ['llama-1b'] are drafted for by no pool" in validation_error(args)


def test_remote_draft_needs_a_pool_with_a_draft_worker():
    args = _prod_with()
    del pool_of(args, "routed")["speculation"]["draft_worker"]
    del args["models"][0]["draft_workers"]
    msg = validation_error(args)
    assert "(chat) allows method 'remote_draft' but no pool the router may send to serves it" in msg
    assert "with a draft_worker for remote_draft" in msg


def test_draft_worker_must_share_the_tokenizer():
    args = _prod_with()
    _draft_worker(args)["source"] = "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"  # same vocab: valid
    AppConfig.model_validate(args)
    _draft_worker(args)["architecture"] = {
        "num_layers": 2,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_kv_heads": 4,
        "head_dim": 64,
        "intermediate_size": 512,
        "vocab_size": 32000,
    }
    msg = validation_error(args)
    assert "draft_workers[0]: vocabulary size 32000 differs from the target's 128256" in msg


def test_draft_worker_memory_share_is_checked():
    args = _prod_with()
    _draft_worker(args)["gpu_memory_utilization"] = 0.8  # above its 0.5 GPU share
    assert "gpu_memory_utilization 0.8 exceeds gpu_fraction 0.5" in validation_error(args)
    args = _prod_with()
    _draft_worker(args)["gpu_fraction"] = 0.05  # 1.1 GiB cannot hold 2.3 GiB of weights
    msg = validation_error(args)
    assert "draft worker 'llama-1b' does not fit" in msg and "DOES NOT FIT" in msg


def test_gpu_fraction_on_cpu_is_refused():
    args = copy.deepcopy(config_args(LOCAL_CONFIG))
    _draft_worker(args)["gpu_fraction"] = 0.5
    assert "gpu_fraction applies to accelerator kind 'gpu' only" in validation_error(args)


def test_cpu_cores_bind_each_engine_and_are_checked(test_models):
    from serve_app.llm_configs import build_llm_config

    model = AppConfig.model_validate(config_args(LOCAL_CONFIG)).models[0]
    binds = {
        p.name: build_llm_config(model, p).runtime_env["env_vars"].get("VLLM_CPU_OMP_THREADS_BIND") for p in model.pools
    }
    assert binds == {"plain": "1", "routed": "0,1", "draft": "1"}
    args = _prod_with()
    pool_of(args, "routed")["cpu_cores"] = "0"
    assert "pools.routed.cpu_cores applies to accelerator kind 'cpu' only" in validation_error(args)
    args = copy.deepcopy(config_args(LOCAL_CONFIG))
    pool_of(args, "routed")["cpu_cores"] = "0|1"
    assert "one '|'-separated group of cores per TP rank (1)" in validation_error(args)
