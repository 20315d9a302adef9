"""Speculation methods side by side, over HTTP against the running app.

    python -m cluster.benchmarks.spec_methods [--base-url URL] [--metrics-url URL] [--out DIR]

For each workload (code_edit, chat, free_form) and concurrency (1, 8) it sends the same requests
with each speculation method forced (x-spec-method header): none, ngram, the in-engine draft
model and the separately placed draft worker (remote_draft). The methods are measured one
after another in one run after a warm-up, and every speedup is a ratio to no speculation on
the same workload and concurrency. Acceptance comes from vLLM's own spec-decode counters of
the pool that served the method, and the time target steps waited for remote drafts from the
app's draft-call metrics (both scraped from Ray's metrics endpoint).
Writes DIR/spec_methods.json and DIR/spec_methods.md, and DIR/draft_memory.{json,md}: what
placing each draft worker apart saves on the target (from the configs, by the plan's arithmetic).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster.benchmarks import report, workloads
from cluster.benchmarks.http_load import run_load, summarize
from cluster.scrape import quiet_pool_counters
from serve_app.check import load_apps
from serve_app.config.placement import memory_moved_off_target


def _pool_deltas(before: dict[str, float], after: dict[str, float]) -> dict:
    delta = {key: after[key] - before[key] for key in after}
    return {
        "acceptance_rate": delta["accepted_tokens"] / delta["draft_tokens"] if delta["draft_tokens"] else None,
        "mean_acceptance_length": 1 + delta["accepted_tokens"] / delta["drafts"] if delta["drafts"] else None,
        # One draft worker call per engine step that has remote-draft requests.
        "draft_wait_ms_per_step": 1000 * delta["draft_wait_s"] / delta["draft_calls"] if delta["draft_calls"] else None,
        "draft_fallback_steps": delta["draft_fallbacks"],
    }


def run(
    base_url: str,
    metrics_url: str,
    model: str,
    methods: list[str],
    concurrencies: list[int],
    requests_per_client: int,
    max_tokens: int,
) -> list[dict]:
    total = requests_per_client * max(concurrencies)
    loads = [
        workloads.of_kind("code_edit", total, max_tokens),
        workloads.of_kind("chat", total, max_tokens),
        workloads.of_kind("free_form", total, max_tokens),
    ]
    body = {"model": model, "temperature": 0.0, "max_tokens": max_tokens, "ignore_eos": True}

    pool_of = {}
    for method in methods:  # warm-up: engine caches, the ngram proposer's JIT compile
        results, _ = asyncio.run(
            run_load(base_url, [{**body, **b} for b in loads[0].bodies[:2]], 2, {"x-spec-method": method})
        )
        pool_of[method] = results[0].headers["x-spec-pool"]

    rows = []
    for load in loads:
        for concurrency in concurrencies:
            bodies = [{**body, **b} for b in load.bodies[: requests_per_client * concurrency]]
            for method in methods:
                pool = pool_of[method]
                before = quiet_pool_counters(metrics_url, pool)
                results, wall = asyncio.run(run_load(base_url, bodies, concurrency, {"x-spec-method": method}))
                after = quiet_pool_counters(metrics_url, pool)
                rows.append(
                    {
                        "workload": load.name,
                        "concurrency": concurrency,
                        "method": method,
                        "pool": pool,
                        **summarize(results, wall),
                        **_pool_deltas(before, after),
                    }
                )
                report.progress(
                    f"{load.name} at concurrency {concurrency}, {method}: "
                    f"{rows[-1]['tokens_per_s']:.1f} tok/s ({len(rows)} of "
                    f"{len(loads) * len(concurrencies) * len(methods)} arms)"
                )
    for row in rows:
        base = next(
            r
            for r in rows
            if r["method"] == "none" and r["workload"] == row["workload"] and r["concurrency"] == row["concurrency"]
        )
        row["speedup_vs_no_spec"] = row["tokens_per_s"] / base["tokens_per_s"]
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| workload | conc | method | tok/s | speedup | TTFT p50/p99 ms | TPOT p50/p99 ms | accept rate "
        "| mean accept len | draft wait ms/step | fallback steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        remote = r["method"] == "remote_draft"
        lines.append(
            f"| {r['workload']} | {r['concurrency']} | {r['method']} | {r['tokens_per_s']:.1f} | "
            f"{r['speedup_vs_no_spec']:.2f}x | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | "
            f"{r['tpot_p50_ms']:.1f} / {r['tpot_p99_ms']:.1f} | {_fmt(r['acceptance_rate'], '.2f')} | "
            f"{_fmt(r['mean_acceptance_length'], '.2f')} | {_fmt(r['draft_wait_ms_per_step'], '.1f')} | "
            f"{_fmt(r['draft_fallback_steps'] if remote else None, '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def draft_memory(configs: list[Path]) -> list[dict]:
    return [
        memory_moved_off_target(model, worker)
        for path in configs
        for _, app in load_apps(path)
        for model in app.models
        for worker in model.draft_workers
    ]


def memory_markdown(rows: list[dict]) -> str:
    lines = [
        "| model | draft worker | TP | draft weights off each target rank | KV bytes/token target + "
        "in-engine draft | KV capacity gained |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['draft_worker']} | {r['tensor_parallel_size']} | "
            f"{r['draft_weights_mib_per_rank']:.1f} MiB | {r['kv_bytes_per_token_target']:.0f} + "
            f"{r['kv_bytes_per_token_draft']:.0f} | +{100 * r['kv_capacity_gain']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = report.parser(__doc__, "base_url", "methods", "concurrency")
    parser.add_argument("--metrics-url", default="http://127.0.0.1:8080/metrics")
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument(
        "--configs",
        default="configs/local.yaml,configs/prod.yaml",
        help="configs whose draft workers' target-side memory savings to report",
    )
    args = parser.parse_args(argv)
    memory = draft_memory([Path(c) for c in args.configs.split(",")])
    report.write(args.out, "draft_memory", memory, memory_markdown(memory))
    rows = run(
        args.base_url,
        args.metrics_url,
        args.model,
        args.methods.split(","),
        [int(c) for c in args.concurrency.split(",")],
        args.requests_per_client,
        args.max_tokens,
    )
    report.write(args.out, "spec_methods", rows, markdown(rows))


if __name__ == "__main__":
    main()
