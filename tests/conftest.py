"""Shared, session-scoped parts: the test models, one Ray cluster, one running Serve app.

Everything the session starts carries SPECSERVE_RUN_ID in its environment and is ended by
that id at the end (Ray's processes and vLLM's EngineCore/Worker processes alike).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from cluster import prometheus as prometheus_server
from cluster.processes import RUN_ID_ENV, kill_run, run_processes
from cluster.testmodels.build import ensure_built
from tests.helpers import CONTROL_KEY, CONTROL_KEY_ENV, LOCAL_CONFIG, ROOT, free_port, wait_until

APP_START_DEADLINE_S = 600
# The ray and serve commands of the interpreter running the tests.
BIN = Path(sys.executable).parent


# Fixtures that start Ray and vLLM or build the test models: the tests that use them are `live`,
# so `pytest -m "not live"` runs the unit tests alone, in seconds.
LIVE_FIXTURES = {"ray_cluster", "serve_app", "test_models"}


def pytest_collection_modifyitems(items):
    """Marks live tests; tests that kill parts of the shared app run after the others, and the one
    that shuts it down runs last, whatever their files' names (the sort is stable: the rest keep
    their order)."""
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)
    items.sort(
        key=lambda item: (
            item.get_closest_marker("ends_app") is not None,
            item.get_closest_marker("disrupts_app") is not None,
        )
    )


@pytest.fixture(scope="session")
def test_models() -> dict:
    return ensure_built()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A private Ray head (own ports, own temp dir), ended by run id at session end."""
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    gcs_port, metrics_port = free_port(), free_port()
    # The control key configs/local.yaml names (ingress.access.control_keys_env).
    env = {**os.environ, RUN_ID_ENV: run_id, CONTROL_KEY_ENV: CONTROL_KEY}
    temp_dir = tmp_path_factory.mktemp("ray")
    subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={gcs_port}",
            "--num-cpus=16",
            f"--metrics-export-port={metrics_port}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        yield {
            "address": f"127.0.0.1:{gcs_port}",
            "metrics_url": f"http://127.0.0.1:{metrics_port}/metrics",
            "env": env,
            "run_id": run_id,
            "logs": temp_dir / "session_latest" / "logs",
        }
    finally:
        kill_run(run_id)
        assert not run_processes(run_id), "processes of the test run outlived the cleanup"


@pytest.fixture(scope="session")
def prometheus(ray_cluster, tmp_path_factory):
    """A real Prometheus server scraping the session's Ray metrics agent; yields its base URL."""
    directory = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    target = ray_cluster["metrics_url"].removeprefix("http://").removesuffix("/metrics")
    with (directory / "prometheus.log").open("w") as log:
        proc = prometheus_server.start(target, port, directory, log, env=ray_cluster["env"])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: prometheus_server.targets_up(base), 60, "Prometheus to scrape Ray's metrics agent")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def serve_app(ray_cluster, test_models, tmp_path_factory):
    """configs/local.yaml served by `serve run`, on a free port; yields its base URL."""
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    port = free_port()
    config["http_options"]["port"] = port
    config_path = tmp_path_factory.mktemp("config") / "local.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log = (tmp_path_factory.mktemp("logs") / "serve_run.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", "--address", ray_cluster["address"], str(config_path)],
        env=ray_cluster["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, f"serve run exited early; see {log.name}"
        # Serve keeps `serve run` alive when the app fails to build; fail fast instead of at the deadline.
        if "Exception importing application" in Path(log.name).read_text(errors="replace"):
            pytest.fail(f"the app failed to build; see {log.name}")
        return httpx.get(f"{base}/health", timeout=5).status_code == 200

    try:
        wait_until(ready, APP_START_DEADLINE_S, "the app's /health to report every pool running")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def openai_client(serve_app):
    from openai import OpenAI

    return OpenAI(base_url=f"{serve_app}/v1", api_key="unused", max_retries=0, timeout=120)
