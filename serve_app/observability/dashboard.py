"""The Grafana dashboard for operators: what speculation is doing, from the metrics the app and
vLLM export through Ray's metrics agent (names as Prometheus sees them: Ray adds `ray_`).

    python -m serve_app.observability.dashboard > k8s/dashboards/specserve.json

writes the dashboard that `k8s/` ships as a ConfigMap for Grafana's sidecar, and that imports
by hand (Dashboards > New > Import) into any Grafana with a Prometheus data source. Panels are
data below; tests/test_dashboard.py checks the committed JSON is this module's output and runs
every query against a real Prometheus scraping the live app.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

UID = "specserve-speculation"
RATE = "$__rate_interval"
MODEL = 'model=~"$model"'
# vLLM's engine metrics carry the replica id only; specserve_replica_info maps it to the pool.
POOL_OF_REPLICA = f"on (ReplicaId) group_left (pool) max by (ReplicaId, pool) (ray_specserve_replica_info{{{MODEL}}})"


def per_pool_rate(metric: str) -> str:
    return f"sum by (pool) (rate({metric}[{RATE}]) * {POOL_OF_REPLICA})"


def per_pool_gauge(metric: str) -> str:
    return f"sum by (pool) ({metric} * {POOL_OF_REPLICA})"


def _select(metric: str, selector: str) -> str:
    return f"{metric}{{{selector}}}" if selector else metric


def rate_by(labels: str, metric: str, selector: str = MODEL) -> str:
    return f"sum by ({labels}) (rate({_select(metric, selector)}[{RATE}]))"


def quantile(q: float, labels: str, histogram: str, selector: str = MODEL) -> str:
    return f"histogram_quantile({q}, sum by (le, {labels}) (rate({_select(histogram + '_bucket', selector)}[{RATE}])))"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def p50_p99(label: str, histogram: str, selector: str = MODEL) -> tuple[Query, ...]:
    legend = f"{{{{{label}}}}}"
    return tuple(
        Query(quantile(q, label, histogram, selector), f"{legend} {name}") for q, name in ((0.5, "p50"), (0.99, "p99"))
    )


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    # Series that exist only once their event has happened (a draft worker fallback, a refusal):
    # empty on a healthy app, so the live test looks for them where it causes the event.
    event: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


SPEC = "ray_specserve_spec"
VLLM_SPEC = "ray_vllm_spec_decode_num"
CLASS_METHOD = "pool, request_class, method"
CLASS_METHOD_LEGEND = "{{pool}} {{request_class}} {{method}}"
ROUTER_CHOICES = "ray_specserve_router_choices_total"
AUTOSCALING = "ray_specserve_autoscaling"

ROWS = (
    Row(
        "Speculation: acceptance",
        (
            Panel(
                "Acceptance rate per pool",
                "Accepted over proposed draft tokens, from each pool's vLLM engines.",
                (
                    Query(
                        f"{per_pool_rate(f'{VLLM_SPEC}_accepted_tokens_total')}"
                        f" / {per_pool_rate(f'{VLLM_SPEC}_draft_tokens_total')}",
                        "{{pool}}",
                    ),
                ),
                "percentunit",
            ),
            Panel(
                "Mean acceptance length per pool",
                "Tokens a target step emits per draft: 1 + accepted tokens per draft (vLLM's definition).",
                (
                    Query(
                        f"1 + {per_pool_rate(f'{VLLM_SPEC}_accepted_tokens_total')}"
                        f" / {per_pool_rate(f'{VLLM_SPEC}_drafts_total')}",
                        "{{pool}}",
                    ),
                ),
            ),
            Panel(
                "Acceptance rate per request class and method",
                "From the routed pools' proposer books, per class and method drafted for.",
                (
                    Query(
                        f"{rate_by(CLASS_METHOD, f'{SPEC}_accepted_tokens_total')}"
                        f" / {rate_by(CLASS_METHOD, f'{SPEC}_draft_tokens_total')}",
                        CLASS_METHOD_LEGEND,
                    ),
                ),
                "percentunit",
            ),
            Panel(
                "Mean acceptance length per request class and method",
                "1 + accepted tokens per draft, per class and method.",
                (
                    Query(
                        f"1 + {rate_by(CLASS_METHOD, f'{SPEC}_accepted_tokens_total')}"
                        f" / {rate_by(CLASS_METHOD, f'{SPEC}_drafts_total')}",
                        CLASS_METHOD_LEGEND,
                    ),
                ),
            ),
            Panel(
                "Acceptance by draft position",
                "Share of drafts whose token at each position was accepted: where a longer k stops paying.",
                (
                    Query(
                        f"{rate_by('request_class, method, position', f'{SPEC}_accepted_tokens_per_pos_total')}"
                        f" / ignoring (position) group_left"
                        f" {rate_by('request_class, method', f'{SPEC}_drafts_total')}",
                        "{{request_class}} {{method}} pos {{position}}",
                    ),
                ),
                "percentunit",
            ),
        ),
    ),
    Row(
        "Router and tuner",
        (
            Panel(
                "Router choices per class",
                "Requests per second by the speculation method the router chose for each class.",
                (Query(rate_by("request_class, method", ROUTER_CHOICES), "{{request_class}} {{method}}"),),
                "reqps",
            ),
            Panel(
                "Why the router chose",
                "The reason behind each choice (evidence, exploration, load, a header, a fixed class).",
                (Query(rate_by("request_class, reason", ROUTER_CHOICES), "{{request_class}} {{reason}}"),),
                "reqps",
            ),
            Panel(
                "Tuned k per pool, class and method",
                "The draft length the spec tuner set, as the engines apply it without restarts.",
                (Query(f"max by ({CLASS_METHOD}) (ray_specserve_tuned_k{{{MODEL}}})", CLASS_METHOD_LEGEND),),
            ),
            Panel(
                "Changes of k",
                "How often k moved (the tuner, or an operator's pin), per pool, class and method.",
                (
                    Query(
                        f"sum by ({CLASS_METHOD}) (increase(ray_specserve_tuned_k_changes_total{{{MODEL}}}[{RATE}]))",
                        CLASS_METHOD_LEGEND,
                    ),
                ),
                event=True,
            ),
        ),
    ),
    Row(
        "Throughput and latency per class",
        (
            Panel(
                "Tokens per second per class",
                "Completion tokens returned, seen at the ingress.",
                (Query(rate_by("request_class", "ray_specserve_generated_tokens_total"), "{{request_class}}"),),
                "short",
            ),
            Panel(
                "Time to first token per class",
                "p50 and p99 at the ingress (streaming requests).",
                p50_p99("request_class", "ray_specserve_time_to_first_token_seconds"),
                "s",
            ),
            Panel(
                "Time per output token per class",
                "p50 and p99 at the ingress: a request's mean gap between tokens after the first.",
                p50_p99("request_class", "ray_specserve_time_per_output_token_seconds"),
                "s",
            ),
            Panel(
                "Requests by outcome",
                "Completions per second by pool and status.",
                (Query(rate_by("pool, status", "ray_specserve_requests_total"), "{{pool}} {{status}}"),),
                "reqps",
            ),
            Panel(
                "Refused over the in-flight limit",
                "Completions an ingress replica answered with 429 and Retry-After (ingress.overload).",
                (Query(rate_by("status", "ray_specserve_refused_requests_total", ""), "{{status}}"),),
                "reqps",
                event=True,
            ),
        ),
    ),
    Row(
        "Draft worker",
        (
            Panel(
                "Draft worker latency",
                "p50 and p99 of one batched drafting call at the draft worker.",
                p50_p99("model", "ray_specserve_draft_worker_seconds", ""),
                "s",
            ),
            Panel(
                "Target steps' wait for remote drafts",
                "p50 and p99 of the time a target step waited for its drafts (the deadline caps it).",
                p50_p99("pool", "ray_specserve_draft_wait_seconds"),
                "s",
            ),
            Panel(
                "Draft batch size",
                "Requests drafted per call: the target's mean, and the worker's p50 over all its callers.",
                (
                    Query(
                        f"{rate_by('pool', 'ray_specserve_draft_rows_total')}"
                        f" / {rate_by('pool', 'ray_specserve_draft_calls_total')}",
                        "{{pool}} mean",
                    ),
                    Query(quantile(0.5, "model", "ray_specserve_draft_worker_batch_size", ""), "{{model}} p50"),
                ),
            ),
            Panel(
                "Fallbacks to plain decoding by reason",
                "Target steps that decoded without remote drafts: timeouts, errors, worker unavailable.",
                (Query(rate_by("pool, reason", "ray_specserve_draft_fallbacks_total"), "{{pool}} {{reason}}"),),
                "ops",
                event=True,
            ),
        ),
    ),
    Row(
        "Capacity",
        (
            Panel(
                "Replicas against the autoscaler's desired count",
                "Healthy replicas per Serve deployment, and the count the autoscaler asks for.",
                (
                    Query("sum by (deployment) (ray_serve_deployment_replica_healthy)", "{{deployment}} healthy"),
                    Query("max by (deployment) (ray_serve_autoscaling_desired_replicas)", "{{deployment}} desired"),
                ),
            ),
            Panel(
                "Engine queue per pool",
                "Requests running and waiting in the pool's vLLM engines.",
                (
                    Query(per_pool_gauge("ray_vllm_num_requests_running"), "{{pool}} running"),
                    Query(per_pool_gauge("ray_vllm_num_requests_waiting"), "{{pool}} waiting"),
                ),
            ),
            Panel(
                "KV cache use per pool",
                "The fullest engine's KV cache per pool.",
                (Query(f"max by (pool) (ray_vllm_kv_cache_usage_perc * {POOL_OF_REPLICA})", "{{pool}}"),),
                "percentunit",
            ),
            Panel(
                "What the autoscaling policy read",
                "Per deployment: requests waiting for a batch slot, and the slowest replica's TTFT p90.",
                (
                    Query(f"max by (deployment) ({AUTOSCALING}_waiting_requests)", "{{deployment}} waiting"),
                    Query(f"max by (deployment) ({AUTOSCALING}_ttft_p90_seconds)", "{{deployment}} TTFT p90 (s)"),
                ),
            ),
        ),
    ),
)

PANEL_WIDTH, PANEL_HEIGHT, PER_ROW = 8, 8, 3
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panels() -> list[Panel]:
    return [panel for row in ROWS for panel in row.panels]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend}
            for i, q in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict:
    out, y, panel_id = [], 0, 1
    for row in ROWS:
        out.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y = panel_id + 1, y + 1
        for i, panel in enumerate(row.panels):
            out.append(_panel_json(panel, panel_id, (i % PER_ROW) * PANEL_WIDTH, y + (i // PER_ROW) * PANEL_HEIGHT))
            panel_id += 1
        y += -(-len(row.panels) // PER_ROW) * PANEL_HEIGHT
    model_query = "label_values(ray_specserve_replica_info, model)"
    return {
        "uid": UID,
        "title": "specserve: speculative decoding",
        "description": "Acceptance, routing, tuning, latency and capacity of a specserve deployment",
        "tags": ["specserve", "vllm", "ray-serve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": model_query, "refId": "model"},
                    "definition": model_query,
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "annotations": {"list": []},
        "panels": out,
    }


def as_grafana_sends(expr: str, rate_window: str) -> str:
    """A panel's query as Grafana sends it with every model selected (the variable's allValue)
    and `rate_window` for its rate interval: what a test can ask Prometheus directly."""
    return expr.replace(RATE, rate_window).replace("$model", ".*")


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
