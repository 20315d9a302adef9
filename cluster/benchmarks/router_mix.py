"""The router against every single method, on one mixed workload, over HTTP.

    python -m cluster.benchmarks.router_mix [--base-url URL] [--out DIR]

The same shuffled mix of code edits, chat and summaries (no class hints) is sent with each
method forced on every request (x-spec-method: none, ngram, draft_model) and then with no
header, so the router classifies each request and its policy picks the method. The learned
policy first gets a warm-up pass to explore. Low and high concurrency, all in one run;
ratios are against no speculation at the same concurrency. Writes DIR/router_mix.{json,md}.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from cluster.benchmarks import report
from cluster.benchmarks.http_load import run_load, summarize
from cluster.benchmarks.workloads import mixed

ROUTER = "router"


def _tagged(bodies: list[dict], tag: str) -> list[dict]:
    """The bodies with `tag` as their first line: arms that share a pool must not find each
    other's prompts in vLLM's prefix cache, or the later arm skips prefill work."""
    out = []
    for b in bodies:
        if "prompt" in b:
            out.append({**b, "prompt": f"# {tag}\n{b['prompt']}"})
        else:
            first, *rest = b["messages"]
            out.append({**b, "messages": [{**first, "content": f"# {tag}\n{first['content']}"}, *rest]})
    return out


def run(base_url: str, model: str, methods: list[str], concurrencies: list[int], requests: int,
        max_tokens: int, warmup: int) -> list[dict]:
    bodies = [{**b, "model": model, "temperature": 0.0, "ignore_eos": True} for b in mixed(requests, max_tokens)]
    arms = {m: {"x-spec-method": m} for m in methods} | {ROUTER: {}}
    for headers in arms.values():  # engine caches, the ngram JIT
        asyncio.run(run_load(base_url, _tagged(bodies[:3], "warm-up"), 3, headers))
    learn = [{**b, "model": model, "temperature": 0.0, "ignore_eos": True} for b in mixed(warmup, max_tokens, seed=5)]
    report.progress(f"router warm-up: {len(learn)} requests")
    asyncio.run(run_load(base_url, learn, 1))  # the learned policy explores before it is measured

    rows = []
    for concurrency in concurrencies:
        for arm, headers in arms.items():
            tagged = _tagged(bodies, f"{arm} {concurrency}")
            results, wall = asyncio.run(run_load(base_url, tagged, concurrency, headers))
            chosen = Counter(f"{r.headers.get('x-request-class')}->{r.headers.get('x-spec-method')}" for r in results)
            rows.append({"concurrency": concurrency, "arm": arm, **summarize(results, wall),
                         "choices": dict(sorted(chosen.items()))})
            report.progress(f"concurrency {concurrency}, {arm}: {rows[-1]['tokens_per_s']:.1f} tok/s "
                            f"({len(rows)} of {len(concurrencies) * len(arms)} arms)")
    for row in rows:
        base = next(r for r in rows if r["arm"] == "none" and r["concurrency"] == row["concurrency"])
        row["throughput_ratio"] = row["tokens_per_s"] / base["tokens_per_s"]
        row["tpot_p50_ratio"] = row["tpot_p50_ms"] / base["tpot_p50_ms"]
        row["ttft_p50_ratio"] = row["ttft_p50_ms"] / base["ttft_p50_ms"]
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| conc | arm | tok/s | vs none | TPOT p50 ms (ratio) | TTFT p50 ms (ratio) | class->method |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        choices = ", ".join(f"{k} {v}" for k, v in r["choices"].items())
        lines.append(f"| {r['concurrency']} | {r['arm']} | {r['tokens_per_s']:.1f} | {r['throughput_ratio']:.2f}x | "
                     f"{r['tpot_p50_ms']:.1f} ({r['tpot_p50_ratio']:.2f}) | {r['ttft_p50_ms']:.0f} "
                     f"({r['ttft_p50_ratio']:.2f}) | {choices} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = report.parser(__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=30, help="requests the router may learn from first")
    args = parser.parse_args(argv)
    rows = run(args.base_url, args.model, args.methods.split(","), [int(c) for c in args.concurrency.split(",")],
               args.requests, args.max_tokens, args.warmup)
    report.write(args.out, "router_mix", rows, markdown(rows))


if __name__ == "__main__":
    main()
