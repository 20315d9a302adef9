"""The engine every replica runs (serve_app/engine.py): one process per one-rank CPU engine
(tests/test_ray_llm_seam.py pins the override point), on tcmalloc, with oneDNN's primitive cache off."""

from __future__ import annotations

import ctypes.util

import pytest

from cluster.processes import run_processes
from serve_app import engine
from tests.helpers import LOCAL_MODEL

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
