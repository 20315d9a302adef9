"""The Grafana dashboard: the committed JSON is the module's output, its layout is one Grafana
imports, and every query answers from a real Prometheus scraping the live app.

Panels of events a healthy app need not have (refusals, draft fallbacks, changes of k) are
checked by the tests that cause them: test_http (a burst past the limit, a pinned k) and
test_draft_worker (a killed worker).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from contextlib import contextmanager

import httpx

from cluster import prometheus as prometheus_server
from cluster.benchmarks.http_load import run_load
from serve_app.observability import dashboard
from tests.helpers import LOCAL_MODEL, MODEL, PLAIN_POOL, ROOT, panel_series

COMMITTED = ROOT / "k8s" / "dashboards" / "specserve.json"
METRIC_NAME = re.compile(r"\b(ray_[a-z0-9_]+)")


def _metric_names(panel: dashboard.Panel) -> set[str]:
    return {name for q in panel.queries for name in METRIC_NAME.findall(q.expr)}


def _family(name: str) -> str:
    return re.sub(r"_(bucket|total|count|sum)$", "", name)


def test_committed_dashboard_is_the_modules_output():
    assert COMMITTED.read_text() == dashboard.render(), (
        "k8s/dashboards/specserve.json is stale: python -m serve_app.observability.dashboard > "
        "k8s/dashboards/specserve.json"
    )


def test_layout_is_one_grafana_imports():
    board = json.loads(COMMITTED.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert [t["refId"] for t in panel["targets"]] == [chr(ord("A") + i) for i in range(len(panel["targets"]))]
    # No two panels overlap on the 24-column grid.
    cells = [
        (x, y)
        for p in board["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["allValue"] == ".*"


@contextmanager
def _steady_traffic(base: str):
    """Requests that touch every part the dashboard shows (the router's classes, the remote draft
    worker, the plain pool), sent until the block ends: rates need a counter that grows while
    Prometheus watches, and vLLM's gauges are exported while its engines step."""
    code = "def parse_header(line):\n    key, _, value = line.partition(':')\n"
    bodies = [
        {"model": MODEL, "prompt": f"{code}# variant {i}\n", "max_tokens": 24, "temperature": 0.0, "stream": True}
        for i in range(2)
    ] + [
        {"model": MODEL, "messages": [{"role": "user", "content": f"Tell me about rivers {i}"}], "max_tokens": 24}
        for i in range(2)
    ]
    # Every pool steps: the router sends all classes to the routed pool, so the others are named.
    headers = (
        {},
        {"x-spec-method": "remote_draft", "x-spec-k": "3"},
        {"x-spec-pool": PLAIN_POOL},
        {"x-spec-method": "draft_model"},
    )
    stop, results = threading.Event(), []

    def send():
        while not stop.is_set():
            for extra in headers:
                results.extend(asyncio.run(run_load(base, bodies, concurrency=2, headers=extra))[0])

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join(timeout=300)
    assert results and all(r.completion_tokens > 0 for r in results)


def test_every_query_and_variable_answers_from_a_real_prometheus(serve_app, prometheus, ray_cluster):
    with _steady_traffic(serve_app):
        for panel in dashboard.panels():
            if not panel.event:
                panel_series(prometheus, panel.title)
        scrape = httpx.get(ray_cluster["metrics_url"], timeout=10).text
        per_class = panel_series(prometheus, "Acceptance rate per request class and method")[0]
        # vLLM's engine metrics reach every pool through the replica-to-pool join.
        [kv_cache] = panel_series(prometheus, "KV cache use per pool")
    exported = {_family(line.split("{")[0].split(" ")[0]) for line in scrape.splitlines() if line.startswith("ray_")}
    for panel in dashboard.panels():
        missing = {name for name in _metric_names(panel) if _family(name) not in exported}
        assert panel.event or not missing, f"{panel.title!r} reads metrics the app does not export: {missing}"
    assert "code_edit" in {s["metric"]["request_class"] for s in per_class}
    assert {s["metric"]["pool"] for s in kv_cache} == {p["name"] for p in LOCAL_MODEL["pools"]}
    models = prometheus_server.query(prometheus, "count by (model) (ray_specserve_replica_info)")
    assert MODEL in {s["metric"]["model"] for s in models}
