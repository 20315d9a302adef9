"""Pins what `serve_app/vllm_seam.py` takes from vLLM's and Ray Serve LLM's engine internals."""

from __future__ import annotations

import dataclasses
import inspect
import os
from types import SimpleNamespace

import numpy as np

from serve_app import vllm_seam


def test_ngram_lookup_drafts_what_followed_the_last_ngram_earlier_in_the_sequence():
    config = SimpleNamespace(
        model_config=SimpleNamespace(max_model_len=64),
        scheduler_config=SimpleNamespace(max_num_seqs=4),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    lookup = vllm_seam.ngram_lookup(config, lookup_min=2, lookup_max=3, k_max=3)
    tokens = np.zeros((4, 64), dtype=np.int32)
    tokens[0, :8] = [1, 2, 3, 4, 5, 1, 2, 3]
    drafts = lookup.propose(3, [[3], [], [], []], np.array([8, 0, 0, 0]), tokens)
    assert list(drafts[0]) == [4, 5, 1]


def one_rank_cpu_config():
    """The fields vLLM's OpenMP manager reads from a one-rank CPU engine's config."""
    return SimpleNamespace(
        parallel_config=SimpleNamespace(local_world_size=1, data_parallel_rank_local=None, _api_process_count=1),
        kv_transfer_config=None,
    )


def test_one_worker_omp_env_binds_the_threads_to_the_configured_cores_while_the_block_runs(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")
    monkeypatch.setenv("LD_PRELOAD", "libgomp.so.1")  # torch's libgomp, as the engines preload it
    monkeypatch.delenv("GOMP_CPU_AFFINITY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with vllm_seam.one_worker_omp_env(one_rank_cpu_config()):
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["GOMP_CPU_AFFINITY"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "GOMP_CPU_AFFINITY" not in os.environ


def test_the_model_runner_keeps_its_batch_rows_and_request_states_where_the_seam_reads_them():
    from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    init = inspect.getsource(GPUModelRunner.__init__)
    assert "self.requests: dict[str, CachedRequestState]" in init and "self.input_batch = InputBatch(" in init
    assert isinstance(inspect.getattr_static(InputBatch, "req_ids"), property)
    assert "sampling_params" in {f.name for f in dataclasses.fields(CachedRequestState)}

    state = SimpleNamespace(sampling_params=SimpleNamespace(extra_args={"spec": 1}))
    runner = SimpleNamespace(input_batch=SimpleNamespace(req_ids=["a", "b", "c"]), requests={"a": state})
    assert vllm_seam.scheduled_request_ids(runner, 2) == ["a", "b"]
    assert vllm_seam.request_extra_args(runner, "a") == {"spec": 1}
    assert vllm_seam.request_extra_args(runner, "gone") is None


def test_ray_serve_llms_engine_keeps_the_vllm_engine_client_that_takes_token_prompts():
    from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine
    from vllm.engine.protocol import EngineClient

    assert "self._engine_client = " in inspect.getsource(VLLMEngine)
    assert list(inspect.signature(EngineClient.generate).parameters)[:4] == [
        "self",
        "prompt",
        "sampling_params",
        "request_id",
    ]
    client = object()
    assert vllm_seam.engine_client(SimpleNamespace(_engine_client=client)) is client
