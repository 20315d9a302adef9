"""Speculation methods side by side, over HTTP against the running app.

    python -m cluster.benchmarks.spec_methods [--base-url URL] [--metrics-url URL] [--out DIR]

For each workload (code_edit, free_form) and concurrency (1, 8) it sends the same requests
with each speculation method forced (x-spec-method header): none, ngram, draft model. The
methods are measured one after another in one run after a warm-up, and every speedup is a
ratio to no speculation on the same workload and concurrency. Acceptance comes from vLLM's
own spec-decode counters of the pool that served the method (scraped from Ray's metrics
endpoint).
Writes DIR/spec_methods.json and DIR/spec_methods.md.
"""

from __future__ import annotations

import asyncio

from cluster.benchmarks import report, workloads
from cluster.benchmarks.http_load import run_load, summarize
from serve_app.observability.scrape import pool_counters, settled_pool_counters

def _acceptance(before: dict[str, float], after: dict[str, float]) -> dict:
    drafts = after["drafts"] - before["drafts"]
    proposed = after["draft_tokens"] - before["draft_tokens"]
    accepted = after["accepted_tokens"] - before["accepted_tokens"]
    return {
        "acceptance_rate": accepted / proposed if proposed else None,
        "mean_acceptance_length": 1 + accepted / drafts if drafts else None,
    }


def run(base_url: str, metrics_url: str, model: str, methods: list[str], concurrencies: list[int],
        requests_per_client: int, max_tokens: int) -> list[dict]:
    total = requests_per_client * max(concurrencies)
    loads = [workloads.code_edit(total, max_tokens), workloads.free_form(total, max_tokens)]
    body = {"model": model, "temperature": 0.0, "max_tokens": max_tokens, "ignore_eos": True}

    pool_of = {}
    for method in methods:  # warm-up: engine caches, the ngram proposer's JIT compile
        results, _ = asyncio.run(run_load(base_url, [{**body, "prompt": p} for p in loads[0].prompts[:2]], 2,
                                          {"x-spec-method": method}))
        pool_of[method] = results[0].headers["x-spec-pool"]

    rows = []
    for load in loads:
        for concurrency in concurrencies:
            prompts = load.prompts[: requests_per_client * concurrency]
            bodies = [{**body, "prompt": p, "max_tokens": load.max_tokens} for p in prompts]
            for method in methods:
                pool = pool_of[method]
                before = pool_counters(metrics_url, pool)
                results, wall = asyncio.run(run_load(base_url, bodies, concurrency, {"x-spec-method": method}))
                after = settled_pool_counters(metrics_url, pool, before["requests"] + len(results))
                rows.append({"workload": load.name, "concurrency": concurrency, "method": method, "pool": pool,
                             **summarize(results, wall), **_acceptance(before, after)})
    for row in rows:
        base = next(r for r in rows if r["method"] == "none" and r["workload"] == row["workload"]
                    and r["concurrency"] == row["concurrency"])
        row["speedup_vs_no_spec"] = row["tokens_per_s"] / base["tokens_per_s"]
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict]) -> str:
    lines = ["| workload | conc | method | tok/s | speedup | TTFT p50/p99 ms | TPOT p50/p99 ms | accept rate "
             "| mean accept len |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['concurrency']} | {r['method']} | {r['tokens_per_s']:.1f} | "
            f"{r['speedup_vs_no_spec']:.2f}x | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | "
            f"{r['tpot_p50_ms']:.1f} / {r['tpot_p99_ms']:.1f} | {_fmt(r['acceptance_rate'], '.2f')} | "
            f"{_fmt(r['mean_acceptance_length'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = report.parser(__doc__)
    parser.add_argument("--metrics-url", default="http://127.0.0.1:8080/metrics")
    parser.add_argument("--requests-per-client", type=int, default=3)
    args = parser.parse_args(argv)
    rows = run(args.base_url, args.metrics_url, args.model, args.methods.split(","),
               [int(c) for c in args.concurrency.split(",")], args.requests_per_client, args.max_tokens)
    report.write(args.out, "spec_methods", rows, markdown(rows))


if __name__ == "__main__":
    main()
