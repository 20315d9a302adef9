"""The router against every single method, on one mixed workload, over HTTP.

    python -m cluster.benchmarks.router_mix [--base-url URL] [--out DIR]

The same shuffled mix of the testbed's kinds (`workloads.MIX`, no class hints) is sent with
each method forced on every request (x-spec-method: none, ngram, draft_model, local_draft,
ngram_or_draft by default) and then with no header, so the router classifies each request and
its policy picks the method.
The router first gets a warm-up pass of other requests of the mix, from which the spec tuner
gathers its evidence. Concurrency 1, 4 and 16 by default, all in one run, each in `--rounds`
interleaved passes over the arms (drift on a shared host then hits every arm alike), each pass
from cold prefix caches (POST /v1/spec/reset_prefix_cache, with the app's control key); ratios are
against no speculation and against the best single method at the same concurrency. Per class,
the report says which method the router settled on while it learned (the warm-up and the first
concurrency) and after how many requests of that class. Writes DIR/router_mix.{json,md,png}.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from cluster.benchmarks import report
from cluster.benchmarks.http_load import reset_prefix_cache, run_load, summarize
from cluster.benchmarks.workloads import mixed

ROUTER = "router"


def run(
    base_url: str,
    model: str,
    methods: list[str],
    concurrencies: list[int],
    requests: int,
    max_tokens: int,
    warmup: int,
    rounds: int,
    control_key: str,
) -> tuple[list[dict], dict[str, dict]]:
    bodies = [{**b, "model": model, "temperature": 0.0, "ignore_eos": True} for b in mixed(requests, max_tokens)]
    arms = {m: {"x-spec-method": m} for m in methods} | {ROUTER: {}}
    for headers in arms.values():  # engine caches, the ngram JIT
        asyncio.run(run_load(base_url, bodies[:3], 3, headers))
    learn = [{**b, "model": model, "temperature": 0.0, "ignore_eos": True} for b in mixed(warmup, max_tokens, seed=5)]
    report.progress(f"router warm-up: {len(learn)} requests")
    learning, _ = asyncio.run(run_load(base_url, learn, 1))  # the router gathers evidence first

    rows = []
    for concurrency in concurrencies:
        collected: dict[str, tuple[list, float]] = {arm: ([], 0.0) for arm in arms}
        for r in range(rounds):
            order = list(arms)[r % len(arms) :] + list(arms)[: r % len(arms)]  # no arm always runs first
            for arm in order:
                # Every arm gets the same prompts (their greedy answers, so their acceptance, are
                # the same), each from cold caches: no arm skips prefill work an earlier one did.
                reset_prefix_cache(base_url, model, control_key)
                results, wall = asyncio.run(run_load(base_url, bodies, concurrency, arms[arm]))
                collected[arm] = (collected[arm][0] + results, collected[arm][1] + wall)
                if arm == ROUTER and concurrency == concurrencies[0]:
                    learning += results
            report.progress(f"concurrency {concurrency}: round {r + 1} of {rounds}")
        for arm, (results, wall) in collected.items():
            chosen = Counter(f"{r.headers.get('x-request-class')}->{r.headers.get('x-spec-method')}" for r in results)
            rows.append(
                {
                    "concurrency": concurrency,
                    "arm": arm,
                    **summarize(results, wall),
                    "choices": dict(sorted(chosen.items())),
                    "seconds_per_class": per_class(results),
                }
            )
    for row in rows:
        same = [r for r in rows if r["concurrency"] == row["concurrency"]]
        base = next(r for r in same if r["arm"] == "none")
        best = max((r for r in same if r["arm"] not in ("none", ROUTER)), key=lambda r: r["tokens_per_s"])
        row["throughput_ratio"] = row["tokens_per_s"] / base["tokens_per_s"]
        row["vs_best_single"] = row["tokens_per_s"] / best["tokens_per_s"]
        row["best_single"] = best["arm"]
        row["tpot_p50_ratio"] = row["tpot_p50_ms"] / base["tpot_p50_ms"]
        row["ttft_p50_ratio"] = row["ttft_p50_ms"] / base["ttft_p50_ms"]
        if row["arm"] == ROUTER:
            row["per_class_ceiling"] = per_class_ceiling(same, best["arm"])
    return rows, settled(learning)


def per_class_ceiling(same: list[dict], best_single: str) -> float:
    """The best single method's request-seconds over those of every class on its fastest arm
    (none included): what choosing the method per class can gain at most where a request's time
    does not depend on what runs beside it, as at concurrency 1. Above it, only running classes
    side by side on different pools gains more."""
    arms = {r["arm"]: r["seconds_per_class"] for r in same if r["arm"] != ROUTER}
    counts = arms[best_single]
    fastest = sum(c["requests"] * min(a[cls]["e2e_s"] for a in arms.values()) for cls, c in counts.items())
    return sum(c["requests"] * c["e2e_s"] for c in counts.values()) / fastest


def per_class(results: list) -> dict[str, dict[str, float]]:
    """Mean seconds per request of each class, to the first token and to the last: where an arm
    gains or loses."""
    seen: dict[str, list] = {}
    for r in results:
        seen.setdefault(r.headers.get("x-request-class"), []).append(r)
    return {
        c: {
            "requests": len(rs),
            "ttft_s": round(sum(r.ttft_s for r in rs) / len(rs), 3),
            "e2e_s": round(sum(r.e2e_s for r in rs) / len(rs), 3),
        }
        for c, rs in sorted(seen.items())
    }


def settled(results: list) -> dict[str, dict]:
    """Per class, in the order sent: the method the router settled on (its last non-exploring
    choice) and the number of that class's requests up to and including the last change."""
    out = {}
    for cls in dict.fromkeys(r.headers.get("x-request-class") for r in results):
        picks = [
            (r.headers.get("x-spec-method"), r.headers.get("x-spec-reason"))
            for r in results
            if r.headers.get("x-request-class") == cls
        ]
        chosen = [(i, m) for i, (m, reason) in enumerate(picks) if reason not in ("explore", "high_load")]
        if not chosen:
            continue
        final = chosen[-1][1]
        last_other = max((i for i, m in chosen if m != final), default=-1)
        out[cls] = {
            "method": final,
            "after_requests": last_other + 2 if last_other >= 0 else 1,
            "requests": len(picks),
            "explored": sum(reason == "explore" for _, reason in picks),
        }
    return out


def markdown(rows: list[dict], classes: dict[str, dict]) -> str:
    lines = [
        "| conc | arm | tok/s | vs none | vs best single | TPOT p50 ms (ratio) | TTFT p50 ms (ratio) | class->method |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        choices = ", ".join(f"{k} {v}" for k, v in r["choices"].items())
        lines.append(
            f"| {r['concurrency']} | {r['arm']} | {r['tokens_per_s']:.1f} | {r['throughput_ratio']:.2f}x | "
            f"{r['vs_best_single']:.2f}x ({r['best_single']}) | {r['tpot_p50_ms']:.1f} "
            f"({r['tpot_p50_ratio']:.2f}) | {r['ttft_p50_ms']:.0f} ({r['ttft_p50_ratio']:.2f}) | {choices} |"
        )
    lines += ["", "| conc | router / best single | per-class ceiling / best single |", "|---|---|---|"]
    lines += [
        f"| {r['concurrency']} | {r['vs_best_single']:.2f}x | {r['per_class_ceiling']:.2f}x |"
        for r in rows
        if r["arm"] == ROUTER
    ]
    lines += [
        "",
        "| class | router settled on | after requests of the class | requests | explored |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c} | {s['method']} | {s['after_requests']} | {s['requests']} | {s['explored']} |"
        for c, s in classes.items()
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = report.parser(__doc__, "base_url", "methods", "concurrency", "control_key")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=30, help="requests the router may learn from first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved passes of every arm per concurrency")
    # Every method a class of configs/local.yaml may get; remote_draft (a draft worker's call per
    # step) was the slowest arm at every concurrency and no class routes to it there.
    parser.set_defaults(concurrency="1,4,16", methods="none,ngram,draft_model,local_draft,ngram_or_draft")
    args = parser.parse_args(argv)
    rows, classes = run(
        args.base_url,
        args.model,
        args.methods.split(","),
        [int(c) for c in args.concurrency.split(",")],
        args.requests,
        args.max_tokens,
        args.warmup,
        args.rounds,
        report.control_key(args),
    )
    report.write(args.out, "router_mix", {"rows": rows, "classes": classes}, markdown(rows, classes))
    report.plot_throughput(args.out, "router_mix", rows, "concurrency", "arm")


if __name__ == "__main__":
    main()
