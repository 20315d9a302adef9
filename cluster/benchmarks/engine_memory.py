"""One CPU engine's memory and speed with oneDNN's primitive cache on (its default) and off (the app).

    .venv/bin/python -m cluster.benchmarks.engine_memory --out bench-results

Each pass starts one engine in a process of its own, as the app starts it (tcmalloc, one process),
with ONEDNN_PRIMITIVE_CACHE_CAPACITY unset or 0, and the arms alternate (on, off, on, off). In a
pass the engine first decodes rounds of 16 prompts of random lengths (64 new tokens each; the
first round is a warm-up), then prefills prompts of --lengths distinct lengths, one at a time, so
every step has a size it has not met: the live heap (tcmalloc's allocated bytes) after each shows
what each new step size costs. Writes DIR/engine_memory.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

from cluster.benchmarks import report
from serve_app.engine import ONEDNN_CACHE_ENV, bound_onednn_cache, preload_tcmalloc

ARMS = ("cache on", "cache off")  # off: as serve_app.engine sets it for the app's engines
HEAP_EVERY = 10  # distinct lengths between heap samples
# vLLM's CPU linear layers cache the last 32 step sizes each (create_onednn_mm): both arms grow
# until they are full, so growth per new size is judged from the first sample past them.
PAST_LAYER_CACHES = 40
MAX_LEN = 1000  # the test models' context is 1,024


def heap_mib() -> float:
    """tcmalloc's allocated bytes: live allocations, not pages it keeps for reuse."""
    import ctypes

    get = ctypes.CDLL(None).MallocExtension_GetNumericProperty
    get.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
    value = ctypes.c_size_t()
    if not get(b"generic.current_allocated_bytes", ctypes.byref(value)):
        raise RuntimeError("tcmalloc did not answer generic.current_allocated_bytes")
    return value.value / 2**20


def pass_in_this_process(model_dir: str, lengths: int, rounds: int, max_tokens: int, seed: int) -> None:
    """One pass; JSON lines on stdout."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, dtype="float32", max_model_len=MAX_LEN + 24, max_num_seqs=16, seed=seed)
    rng = random.Random(seed)

    def prompt(n: int) -> dict:
        return {"prompt_token_ids": [rng.randrange(10, 1000) for _ in range(n)]}

    decode = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    for r in range(rounds):
        start = time.perf_counter()
        out = llm.generate([prompt(rng.randrange(20, MAX_LEN - max_tokens)) for _ in range(16)], decode, use_tqdm=False)
        rate = sum(len(o.outputs[0].token_ids) for o in out) / (time.perf_counter() - start)
        print(json.dumps({"round": r, "tokens_per_s": rate}), flush=True)
    prefill = SamplingParams(max_tokens=1, temperature=0)
    sizes = rng.sample(range(1, MAX_LEN), lengths)
    print(json.dumps({"lengths": 0, "heap_mib": heap_mib()}), flush=True)
    for i, n in enumerate(sizes, 1):
        llm.generate([prompt(n)], prefill, use_tqdm=False)
        if i % HEAP_EVERY == 0 or i == lengths:
            print(json.dumps({"lengths": i, "heap_mib": heap_mib()}), flush=True)


def run_pass(arm: str, args, seed: int) -> dict:
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1")
    preload_tcmalloc(env)
    env.pop(ONEDNN_CACHE_ENV, None)
    if arm == "cache off":
        bound_onednn_cache(env)
    child = [sys.executable, "-m", "cluster.benchmarks.engine_memory", "--pass-seed", str(seed)]
    child += ["--model-dir", args.model_dir, "--lengths", str(args.lengths), "--rounds", str(args.rounds)]
    child += ["--max-tokens", str(args.max_tokens)]
    done = subprocess.run(child, env=env, capture_output=True, text=True, timeout=args.timeout_s)
    if done.returncode != 0:
        raise SystemExit(f"{arm} pass failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    rates = [line["tokens_per_s"] for line in lines if "round" in line][1:]  # the first warms up
    heap = [(line["lengths"], line["heap_mib"]) for line in lines if "heap_mib" in line]
    return {"arm": arm, "seed": seed, "tokens_per_s": statistics.median(rates), "heap": heap}


def per_new_size(heap: list[tuple[int, float]]) -> float:
    """MiB of live heap per new step size, once the per-layer caches are full."""
    (first, before), (last, after) = next(h for h in heap if h[0] >= PAST_LAYER_CACHES), heap[-1]
    return (after - before) / (last - first)


def summarize(passes: list[dict]) -> list[dict]:
    rows = []
    for arm in ARMS:
        mine = [p for p in passes if p["arm"] == arm]
        grown = [p["heap"][-1][1] - p["heap"][0][1] for p in mine]
        per_length = [per_new_size(p["heap"]) for p in mine]
        rows.append(
            {
                "arm": arm,
                "passes": len(mine),
                "tokens_per_s": [round(p["tokens_per_s"], 1) for p in mine],
                "heap_grown_mib": [round(g, 1) for g in grown],
                "mib_per_new_size": round(statistics.mean(per_length), 3),
            }
        )
    on, off = rows
    off["speed_vs_on"] = round(statistics.mean(off["tokens_per_s"]) / statistics.mean(on["tokens_per_s"]), 3)
    return rows


def markdown(rows: list[dict], lengths: int) -> str:
    lines = [
        f"| oneDNN primitive cache | decode tok/s per pass | heap grown over {lengths} new step sizes (MiB) "
        f"| MiB per new step size past the first {PAST_LAYER_CACHES} | decode speed vs on |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {', '.join(f'{x:.1f}' for x in r['tokens_per_s'])} "
            f"| {', '.join(f'{g:+.0f}' for g in r['heap_grown_mib'])} | {r['mib_per_new_size']:.2f} "
            f"| {r.get('speed_vs_on', 1.0):.2f}x |"
        )
    return "\n".join(lines) + "\n"


def plot(out, passes: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for p in passes:
        x, y = zip(*p["heap"], strict=True)
        ax.plot(x, [v - y[0] for v in y], label=f"{p['arm']} (seed {p['seed']})")
    ax.set_xlabel("distinct step sizes met")
    ax.set_ylabel("live heap grown (MiB)")
    ax.set_title("one CPU engine: oneDNN's primitive cache on and off")
    ax.legend(fontsize=7)
    fig.savefig(out / "engine_memory.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    p = report.parser(__doc__)
    p.add_argument("--model-dir", default=".cache/testmodels/target")
    p.add_argument("--lengths", type=int, default=300, help="distinct prompt lengths prefilled per pass")
    p.add_argument("--rounds", type=int, default=6, help="decode rounds per pass; the first is a warm-up")
    p.add_argument("--passes", type=int, default=2, help="passes per arm, alternating")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--pass-seed", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rounds < 2:
        p.error("--rounds must be at least 2: the first round is a warm-up")
    if args.lengths < PAST_LAYER_CACHES + HEAP_EVERY:
        p.error(f"--lengths must be at least {PAST_LAYER_CACHES + HEAP_EVERY}: vLLM's per-layer caches fill first")
    if args.pass_seed is not None:
        return pass_in_this_process(args.model_dir, args.lengths, args.rounds, args.max_tokens, args.pass_seed)
    passes = []
    for i in range(args.passes):
        for arm in ARMS:
            report.progress(f"engine_memory: pass {i + 1}/{args.passes}, {arm}")
            passes.append(run_pass(arm, args, seed=i))
    rows = summarize(passes)
    report.write(args.out, "engine_memory", {"rows": rows, "passes": passes}, markdown(rows, args.lengths))
    plot(args.out, passes)


if __name__ == "__main__":
    main()
