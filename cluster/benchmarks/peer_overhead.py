"""The same fixed method through this app and through Ray Serve LLM, side by side, over HTTP.

    python -m cluster.benchmarks.peer_overhead [--base-url URL] [--out DIR]

Needs the app running (`scripts/run_local.sh`). Deploys Ray Serve LLM (`build_openai_app`) as a
second Serve application at `/peer` of the same cluster, serving the same target with the same
engine settings (dtype, max_model_len, CPU KV cache): one model without speculation, one with
the in-engine draft model at the local config's k. Then, at each concurrency, rounds of the
same requests go to each arm in turn (this app with `x-spec-method` forcing the method, and the
peer's model of that method), so drift on a shared host hits every arm alike. Both apps stay up
throughout: each arm runs beside the other app's idle engines. Ratios are this app over the
peer. Afterwards the peer application is deleted and the processes it started are ended.
Writes DIR/peer_overhead.{json,md,png}.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import psutil

from cluster.benchmarks import report
from cluster.benchmarks.http_load import run_load, summarize
from cluster.benchmarks.workloads import mixed
from serve_app.check import load_apps
from serve_app.config.architecture import resolve_source
from serve_app.llm_configs import DEFAULT_CPU_KVCACHE_GIB

PEER_APP = "peer"
PEER_PREFIX = "/peer"
READY_TIMEOUT_S = 900.0


def _peer_llm_configs(local_config: str) -> dict[str, dict]:
    """Ray Serve LLM configs of the local model: method -> LLMConfig kwargs."""
    _, app = load_apps(Path(local_config))[0]
    model = app.models[0]
    draft_pool = next(p for p in model.pools if p.speculation.method == "draft_model")
    engine = {"dtype": model.dtype, "max_model_len": model.max_model_len}
    common = {
        "accelerator_config": {"kind": "cpu"},
        "runtime_env": {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": DEFAULT_CPU_KVCACHE_GIB}},
    }
    source = resolve_source(model.source)
    draft = resolve_source(draft_pool.speculation.draft.source)
    return {
        "none": {
            "model_loading_config": {"model_id": "peer-none", "model_source": source},
            "engine_kwargs": engine,
            **common,
        },
        "draft_model": {
            "model_loading_config": {"model_id": "peer-draft_model", "model_source": source},
            "engine_kwargs": {
                **engine,
                "speculative_config": {
                    "method": "draft_model",
                    "model": draft,
                    "num_speculative_tokens": draft_pool.speculation.num_speculative_tokens,
                },
            },
            **common,
        },
    }


def deploy_peer(local_config: str, methods: list[str]) -> None:
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    ray.init(address="auto", log_to_driver=False)
    configs = _peer_llm_configs(local_config)
    app = build_openai_app({"llm_configs": [LLMConfig(**configs[m]) for m in methods]})
    serve.run(app, name=PEER_APP, route_prefix=PEER_PREFIX, blocking=False)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        status = serve.status().applications.get(PEER_APP)
        if status is not None and status.status.value == "RUNNING":
            return
        if status is not None and status.status.value == "DEPLOY_FAILED":
            raise RuntimeError(f"Ray Serve LLM failed to deploy: {status.message}")
        time.sleep(5)
    raise TimeoutError(f"Ray Serve LLM was not running after {READY_TIMEOUT_S:.0f} s")


def remove_peer() -> None:
    """Delete the peer app, then end what its replicas started: vLLM engine processes outlive them."""
    from ray import serve

    replicas = [
        p for p in psutil.process_iter(["cmdline"]) if f"ServeReplica:{PEER_APP}:" in " ".join(p.info["cmdline"] or [])
    ]
    engines = [c for p in replicas for c in p.children(recursive=True)]
    serve.delete(PEER_APP)
    _, alive = psutil.wait_procs(replicas + engines, timeout=30)
    for proc in alive:
        proc.kill()


def run(
    base_url: str, model: str, methods: list[str], concurrencies: list[int], requests: int, max_tokens: int, rounds: int
) -> list[dict]:
    bodies = [{**b, "temperature": 0.0, "ignore_eos": True} for b in mixed(requests, max_tokens)]
    arms = {}
    for method in methods:
        arms[("app", method)] = (base_url, model, {"x-spec-method": method})
        arms[("ray_serve_llm", method)] = (base_url + PEER_PREFIX, f"peer-{method}", {})
    for url, name, headers in arms.values():  # engine caches, first-use compilation
        asyncio.run(run_load(url, [{**b, "model": name} for b in bodies[:3]], 3, headers))
    rows = []
    for concurrency in concurrencies:
        samples: dict[tuple, list] = {arm: [] for arm in arms}
        for r in range(rounds):
            for arm, (url, name, headers) in arms.items():
                results, wall = asyncio.run(run_load(url, [{**b, "model": name} for b in bodies], concurrency, headers))
                samples[arm].append(summarize(results, wall))
            report.progress(f"concurrency {concurrency}: round {r + 1} of {rounds}")
        for (system, method), runs in samples.items():
            rows.append(
                {
                    "concurrency": concurrency,
                    "system": system,
                    "method": method,
                    "arm": f"{system} {method}",
                    "tokens_per_s": statistics.median(s["tokens_per_s"] for s in runs),
                    "tpot_p50_ms": statistics.median(s["tpot_p50_ms"] for s in runs),
                    "ttft_p50_ms": statistics.median(s["ttft_p50_ms"] for s in runs),
                    "rounds": [s["tokens_per_s"] for s in runs],
                }
            )
    for row in rows:
        if row["system"] == "app":
            peer = next(
                r
                for r in rows
                if r["system"] == "ray_serve_llm"
                and r["method"] == row["method"]
                and r["concurrency"] == row["concurrency"]
            )
            row["vs_ray_serve_llm"] = row["tokens_per_s"] / peer["tokens_per_s"]
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| conc | method | this app tok/s | Ray Serve LLM tok/s | app / peer | app TPOT p50 ms | peer TPOT p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["system"] != "app":
            continue
        peer = next(
            p
            for p in rows
            if p["system"] == "ray_serve_llm" and p["method"] == r["method"] and p["concurrency"] == r["concurrency"]
        )
        lines.append(
            f"| {r['concurrency']} | {r['method']} | {r['tokens_per_s']:.1f} | {peer['tokens_per_s']:.1f} | "
            f"{r['vs_ray_serve_llm']:.2f}x | {r['tpot_p50_ms']:.1f} | {peer['tpot_p50_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = report.parser(__doc__)
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.set_defaults(methods="none,draft_model", max_tokens=96)
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    httpx.get(f"{args.base_url}/health", timeout=10).raise_for_status()
    deploy_peer(args.config, methods)
    try:
        rows = run(
            args.base_url,
            args.model,
            methods,
            [int(c) for c in args.concurrency.split(",")],
            args.requests,
            args.max_tokens,
            args.rounds,
        )
    finally:
        remove_peer()
    report.write(args.out, "peer_overhead", rows, markdown(rows))
    report.plot_throughput(args.out, "peer_overhead", rows, "concurrency", "arm")


if __name__ == "__main__":
    main()
