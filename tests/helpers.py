"""Plain helpers the test modules share (the fixtures are in conftest.py)."""

from __future__ import annotations

import math
import socket
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from pydantic import ValidationError

from cluster import prometheus
from serve_app.config.schema import AppConfig, format_validation_error
from serve_app.observability import dashboard

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONFIG = ROOT / "configs" / "local.yaml"
PROD_CONFIG = ROOT / "configs" / "prod.yaml"

# The key of the app's control routes in the test session (configs/local.yaml: ingress.access.control_keys_env).
CONTROL_KEY_ENV = "SPECSERVE_CONTROL_KEY"
CONTROL_KEY = uuid.uuid4().hex
CONTROL_AUTH = {"authorization": f"Bearer {CONTROL_KEY}"}


def config_args(path: Path = PROD_CONFIG) -> dict:
    """The `args` of a Serve config's first application, as `serve run` passes them to build_app."""
    return yaml.safe_load(path.read_text())["applications"][0]["args"]


def local_args() -> dict:
    return config_args(LOCAL_CONFIG)


# The live app's model and pools, named from configs/local.yaml, not copied from it.
LOCAL_MODEL = local_args()["models"][0]
MODEL = LOCAL_MODEL["id"]
POOL = {p["speculation"]["method"]: p["name"] for p in LOCAL_MODEL["pools"]}  # none, routed, draft_model
PLAIN_POOL, ROUTED_POOL, DRAFT_POOL = POOL["none"], POOL["routed"], POOL["draft_model"]


def validation_error(args: dict) -> str:
    """The message the app's config validation gives for `args` (which must be invalid)."""
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate(args)
    return format_validation_error(info.value)


def pool_of(args: dict, name: str) -> dict:
    return next(p for p in args["models"][0]["pools"] if p["name"] == name)


def replica_processes(title: str) -> list[psutil.Process]:
    """A Serve replica's process (found by its title, e.g. `ServeReplica:specserve:spec-tuner`)
    and its vLLM engine processes: what a lost node or an OOM kill takes down."""
    [replica] = [p for p in psutil.process_iter(["cmdline"]) if title in " ".join(p.info["cmdline"] or [])]
    return [replica, *replica.children(recursive=True)]


def complete(openai_client, headers: dict | None = None, **params):
    """A greedy /v1/completions call to the test model; the raw response, whose headers say
    where the router sent it (`.parse()` is the completion)."""
    body = {"model": MODEL, "temperature": 0.0, **params}
    return openai_client.completions.with_raw_response.create(extra_headers=headers or {}, **body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, deadline_s: float, what: str, interval_s: float = 1.0):
    """Poll `check` until it returns a truthy value; fail with `what` after the deadline."""
    end = time.monotonic() + deadline_s
    last_error = None
    while time.monotonic() < end:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # the service is not up yet
            last_error = e
        time.sleep(interval_s)
    pytest.fail(f"timed out after {deadline_s}s waiting for {what} (last error: {last_error!r})")


def panel_series(prometheus_url: str, title: str, deadline_s: float = 120) -> list[list[dict]]:
    """Each query of the dashboard panel `title`, as Grafana sends it, once every one answers
    with at least one finite sample from the real Prometheus; fails naming the empty ones."""
    [panel] = [p for p in dashboard.panels() if p.title == title]
    exprs = [dashboard.as_grafana_sends(q.expr, "5m") for q in panel.queries]

    def answered():
        results = [prometheus.query(prometheus_url, expr) for expr in exprs]
        empty = [expr for expr, result in zip(exprs, results) if not any(_finite(s) for s in result)]
        assert not empty, f"no finite sample for: {empty}"
        return results

    return wait_until(answered, deadline_s, f"data in the dashboard panel {title!r}", interval_s=2)


def _finite(sample: dict) -> bool:
    return math.isfinite(float(sample["value"][1]))
