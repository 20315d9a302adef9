"""The engine every replica runs (serve_app/engine.py): one process per one-rank CPU engine
(tests/test_ray_llm_seam.py pins the override point), on tcmalloc, with oneDNN's primitive cache off,
its threads bound to its cores."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import psutil
import pytest
import torch

from cluster.processes import run_processes
from serve_app import engine
from serve_app.config.schema import AppConfig
from serve_app.llm_configs import deployment_name
from tests.helpers import LOCAL_MODEL, local_args
from tests.test_vllm_seam import one_rank_cpu_config

TCMALLOC = ctypes.util.find_library(engine.CPU_ALLOCATOR)


def test_tcmalloc_goes_first_in_ld_preload_once():
    if TCMALLOC is None:
        pytest.fail("libtcmalloc_minimal is not installed: scripts/install.sh installs libtcmalloc-minimal4")
    environ = {"LD_PRELOAD": "/torch/lib/libgomp.so.1"}
    engine.preload_tcmalloc(environ)
    assert environ["LD_PRELOAD"] == f"{TCMALLOC}:/torch/lib/libgomp.so.1"
    engine.preload_tcmalloc(environ)
    assert environ["LD_PRELOAD"].count("libtcmalloc") == 1
    empty: dict[str, str] = {}
    engine.preload_tcmalloc(empty)
    assert empty == {"LD_PRELOAD": TCMALLOC}


def test_without_tcmalloc_the_engine_warns_and_leaves_ld_preload(monkeypatch, caplog):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    environ = {"LD_PRELOAD": "/torch/lib/libgomp.so.1"}
    engine.preload_tcmalloc(environ)
    assert environ == {"LD_PRELOAD": "/torch/lib/libgomp.so.1"}
    assert "libtcmalloc-minimal4" in caplog.text


def test_onednn_cache_is_off_unless_the_operator_sized_it():
    environ: dict[str, str] = {}
    engine.bound_onednn_cache(environ)
    assert environ == {engine.ONEDNN_CACHE_ENV: "0"}
    sized = {engine.ONEDNN_CACHE_ENV: "64"}
    engine.bound_onednn_cache(sized)
    assert sized == {engine.ONEDNN_CACHE_ENV: "64"}


def test_a_one_process_engine_gets_its_cores_and_numba_as_many_threads(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    monkeypatch.setenv("LD_PRELOAD", "libgomp.so.1")
    monkeypatch.setenv(engine.NUMBA_THREADS_ENV, "8")
    with engine.bind_one_process_engine(one_rank_cpu_config()):
        assert os.environ["OMP_NUM_THREADS"] == os.environ[engine.NUMBA_THREADS_ENV] == "2"
        assert os.environ["GOMP_CPU_AFFINITY"] == "0 1"
    assert os.environ[engine.NUMBA_THREADS_ENV] == "8"
    monkeypatch.delenv(engine.NUMBA_THREADS_ENV)
    with engine.bind_one_process_engine(one_rank_cpu_config()):
        pass
    assert engine.NUMBA_THREADS_ENV not in os.environ


NUMBA_THEN_TORCH = """
import numba, numpy, torch
numba.njit(parallel=True)(lambda a: a.sum())(numpy.ones(1000))  # numba's OpenMP pool starts here
print(numba.threading_layer(), torch.get_num_threads())
"""


def test_prompt_lookup_leaves_the_engine_at_its_bound_thread_count(monkeypatch):
    """numba's OpenMP pool shares torch's libgomp (the engines preload it) and sets its thread
    count to its own: the binding gives numba the engine's count, so torch keeps it."""
    libgomp = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    monkeypatch.setenv("LD_PRELOAD", libgomp)
    with engine.bind_one_process_engine(one_rank_cpu_config()):
        out = subprocess.run([sys.executable, "-c", NUMBA_THEN_TORCH], capture_output=True, text=True, check=True)
    layer, torch_threads = out.stdout.split()
    assert torch_threads == "1", f"numba's {layer} pool raised torch to {torch_threads} threads"


def test_importing_the_engine_leaves_numba_unloaded():
    """A process that loaded numba cannot start an in-process vLLM engine (engine_memory does)."""
    code = "import sys, serve_app.engine; print(sorted({'numba', 'llvmlite'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "[]"


def test_every_engine_of_the_app_is_one_process_on_tcmalloc(serve_app, ray_cluster):
    engines = [p for p in run_processes(ray_cluster["run_id"]) if "EngineCore" in " ".join(p.cmdline())]
    # One engine core per target pool and draft worker, and no separate model worker beside it.
    assert len(engines) == len(LOCAL_MODEL["pools"]) + len(LOCAL_MODEL["draft_workers"])
    assert not [p for p in run_processes(ray_cluster["run_id"]) if "VllmWorker" in " ".join(p.cmdline())]
    for proc in engines:
        with open(f"/proc/{proc.pid}/maps") as maps:
            assert "libtcmalloc" in maps.read(), f"engine {proc.pid} runs on glibc's malloc"
        # oneDNN reads its capacity from the environment at its first primitive
        assert proc.environ().get(engine.ONEDNN_CACHE_ENV) == "0", f"engine {proc.pid} caches every batch size"


def test_every_engine_of_the_app_runs_on_the_cores_its_config_names(serve_app, ray_cluster):
    """Each engine's threads stay on its pool's (or draft worker's) `cpu_cores` (vLLM pins each
    OpenMP thread to one of them), with one OpenMP and one numba thread per core: unbound, two
    busy engines span on each other's core."""
    model = AppConfig.model_validate(local_args()).models[0]
    configured = {deployment_name("target", model, p.name): p.cpu_cores for p in model.pools}
    configured |= {deployment_name("draft", model, w.name): w.cpu_cores for w in model.draft_workers}
    seen = {}
    for proc in run_processes(ray_cluster["run_id"]):
        if "EngineCore" not in " ".join(proc.cmdline()):
            continue
        # ray::ServeReplica:<app>:<deployment>[.<method it runs>]
        name = proc.parent().cmdline()[0].split(":")[-1].split(".")[0].strip()
        cores = sorted(int(c) for c in configured[name].split(","))
        for thread in proc.threads():
            try:
                affinity = psutil.Process(thread.id).cpu_affinity()
            except psutil.NoSuchProcess:  # a thread that ended since the listing
                continue
            assert set(affinity) <= set(cores), f"{name}: thread {thread.id} runs on {affinity}, not {cores}"
        env = proc.environ()
        assert env["OMP_NUM_THREADS"] == env[engine.NUMBA_THREADS_ENV] == str(len(cores)), name
        seen[name] = cores
    assert set(seen) == set(configured)
