"""Soak the running app: good and bad requests mixed, for minutes, at a fixed concurrency.

    .venv/bin/python -m cluster.benchmarks.soak --duration-s 300 --concurrency 16 --out bench-results

Every client loops until the time is up. A good request (the testbed's mixed workload, drawn
afresh every 200 requests, streamed) must end with a finish reason and tokens; a bad one (broken
JSON, invalid UTF-8, an unknown model, a negative max_tokens, an unknown method header, a body
over the size limit) must get its 4xx in the OpenAI error shape. Every 10 s it samples each of
the app's processes (Ray's and vLLM's, found by their command lines): its private memory (USS:
pages only it holds, so shared libraries count once) under a name that says which replica or
daemon it is. Memory is judged after a warm-up (a third of the run unless --warmup-s): the least-squares slope of each
process's memory, summed, must stay under --max-mib-per-hour. Writes DIR/soak.json, DIR/soak.md
(with a row per process) and DIR/soak.png (memory, its change per process, and completed
requests over time); exits non-zero if a good request failed, a bad one got another answer,
memory grew past the bound, or processes were left over or gone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from collections.abc import Iterator

import httpx
import psutil

from cluster.benchmarks import report, workloads
from cluster.benchmarks.http_load import RequestFailed, stream_request

APP_PROCESS_MARKERS = ("ServeReplica:", "ServeController", "ProxyActor", "EngineCore", "VLLM", "raylet", "gcs_server")
SAMPLE_S = 10.0
CONTEXT_ERROR = "maximum context length"
DRAW = 200
# The deployment in a replica's title; Ray appends the method it runs (".handle_request...").
REPLICA_NAME = re.compile(r"ServeReplica:[^:\s]*:([\w-]+)")


def bad_requests(model: str) -> list[tuple[str, bytes, dict, int]]:
    """(path, raw body, headers, expected status)."""
    good = json.dumps({"model": model, "prompt": "def f():", "max_tokens": 4}).encode()
    return [
        ("/v1/completions", b'{"model": "' + model.encode() + b'", "prompt": ', {}, 400),
        ("/v1/completions", b'{"model": "' + model.encode() + b'", "prompt": "\xff\xfe"}', {}, 400),
        ("/v1/completions", json.dumps({"model": "no-such-model", "prompt": "x"}).encode(), {}, 404),
        ("/v1/completions", json.dumps({"model": model, "prompt": "x", "max_tokens": -1}).encode(), {}, 400),
        ("/v1/completions", good, {"x-spec-method": "telepathy"}, 400),
        ("/v1/completions", b'{"model": "' + model.encode() + b'", "prompt": "' + b"x" * (5 * 2**20) + b'"}', {}, 413),
    ]


def app_processes() -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(marker in cmdline for marker in APP_PROCESS_MARKERS):
            out.append(proc)
    return out


def role(proc: psutil.Process) -> str:
    """A name that stays the same for one process across samples: the Serve replica or Ray
    daemon it is, and an engine process named after the replica that spawned it."""
    cmdline = " ".join(proc.cmdline())
    if replica := REPLICA_NAME.search(cmdline):
        name = replica.group(1)
    else:
        name = next(m for m in APP_PROCESS_MARKERS if m in cmdline).rstrip(":")
    if "EngineCore" in cmdline or "VLLM" in cmdline:
        parent = proc.parent()
        parent_line = " ".join(parent.cmdline()) if parent else ""
        owner = REPLICA_NAME.search(parent_line)
        name = f"{owner.group(1) if owner else 'unowned'} engine"
    return f"{name} [{proc.pid}]"


def private_mib(procs: list[psutil.Process]) -> dict[str, float]:
    """Each process's unique set size: pages only it holds, so shared libraries and the shared
    object store are not counted once per process, and a leak shows where it is."""
    out = {}
    for proc in procs:
        try:
            out[role(proc)] = round(proc.memory_full_info().uss / 2**20, 1)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def growth(samples: list[dict], warmup_s: float) -> dict[str, dict]:
    """Per process, after the warm-up: MiB gained from the first sample past it to the last, and
    the least-squares slope in MiB per hour."""
    steady = [s for s in samples if s["t_s"] >= warmup_s]
    out = {}
    for name in steady[0]["private_mib"] if len(steady) >= 2 else []:
        points = [(s["t_s"], s["private_mib"][name]) for s in steady if name in s["private_mib"]]
        t_mean = sum(t for t, _ in points) / len(points)
        m_mean = sum(m for _, m in points) / len(points)
        var = sum((t - t_mean) ** 2 for t, _ in points)
        slope = sum((t - t_mean) * (m - m_mean) for t, m in points) / var if var else 0.0
        out[name] = {
            "start_mib": points[0][1],
            "end_mib": points[-1][1],
            "gained_mib": round(points[-1][1] - points[0][1], 1),
            "mib_per_hour": round(slope * 3600, 1),
        }
    return out


def endless_mix(max_tokens: int) -> Iterator[dict]:
    """The mixed workload, drawn afresh every `DRAW` requests: traffic that never repeats fills
    the engines' KV caches (whose pages are touched as blocks are first used) within minutes,
    so what grows after that is not the cache."""
    for seed in itertools.count(17):
        yield from workloads.mixed(DRAW, max_tokens, seed)


async def soak(
    base_url: str, model: str, duration_s: float, concurrency: int, max_tokens: int, bad_share: float, warmup_s: float
) -> dict:
    good_bodies = ({**b, "model": model} for b in endless_mix(max_tokens))
    bad = itertools.cycle(bad_requests(model))
    tally = {
        "good_ok": 0,
        "good_failed": 0,
        "good_too_long": 0,
        "bad_ok": 0,
        "bad_wrong": 0,
        "refused_429": 0,
        "tokens": 0,
    }
    failures: list[str] = []
    samples: list[dict] = []
    end = time.monotonic() + duration_s
    counter = itertools.count()

    async def good(client: httpx.AsyncClient, body: dict) -> None:
        try:
            result = await stream_request(client, body, {})
        except RequestFailed as e:
            # A drawn prompt past the model's context gets the 400 it should: the draw's fault.
            if e.status_code == 400 and CONTEXT_ERROR in str(e):
                tally["good_too_long"] += 1
                return
            if e.status_code != 429:
                raise
            tally["refused_429"] += 1
            return
        if result.finish_reason is None or result.completion_tokens == 0:
            raise RuntimeError(f"an answer ended without a finish reason ({result.completion_tokens} tokens)")
        tally["good_ok"] += 1
        tally["tokens"] += result.completion_tokens

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < end:
            if next(counter) % round(1 / bad_share) == 0:
                path, raw, headers, expected = next(bad)
                resp = await client.post(path, content=raw, headers={"content-type": "application/json", **headers})
                shaped = resp.headers.get("content-type", "").startswith("application/json") and isinstance(
                    resp.json().get("error"), dict
                )
                if resp.status_code == expected and shaped:
                    tally["bad_ok"] += 1
                else:
                    tally["bad_wrong"] += 1
                    failures.append(f"{path} {raw[:60]!r}: expected {expected}, got {resp.status_code}")
                continue
            try:
                await good(client, next(good_bodies))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                tally["good_failed"] += 1
                failures.append(repr(e)[:300])

    async def sampler() -> None:
        start = time.monotonic()
        while time.monotonic() < end + SAMPLE_S:
            procs = app_processes()
            private = await asyncio.to_thread(private_mib, procs)
            samples.append(
                {
                    "t_s": round(time.monotonic() - start, 1),
                    "private_mib": private,
                    "private_gib": round(sum(private.values()) / 1024, 3),
                    "processes": len(procs),
                    "good_ok": tally["good_ok"],
                }
            )
            left = max(0.0, end - time.monotonic())
            report.progress(
                f"soak: {samples[-1]['good_ok']} answered, private memory {samples[-1]['private_gib']} GiB "
                f"in {len(procs)} processes, {left:.0f} s left"
            )
            await asyncio.sleep(SAMPLE_S)

    before = {p.pid for p in app_processes()}
    async with httpx.AsyncClient(
        base_url=base_url, timeout=600, limits=httpx.Limits(max_connections=concurrency * 2)
    ) as client:
        await asyncio.gather(sampler(), *(client_loop(client) for _ in range(concurrency)))
    after = {p.pid for p in app_processes()}
    return {
        "duration_s": duration_s,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        **tally,
        "processes_before": len(before),
        "processes_after": len(after),
        "processes_gone": len(before - after),
        "processes_new": len(after - before),
        "warmup_s": warmup_s,
        "private_gib_first": samples[0]["private_gib"],
        "private_gib_max": max(s["private_gib"] for s in samples),
        "private_gib_last": samples[-1]["private_gib"],
        "growth_after_warmup": growth(samples, warmup_s),
        "samples": samples,
        "failures": failures[:20],
    }


def plot(out, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t_s"] for s in samples]
    fig, (total, each, done) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    total.plot(t, [s["private_gib"] for s in samples], marker=".")
    total.set_ylabel("private memory, all (GiB)")
    for name in samples[0]["private_mib"]:
        points = [(s["t_s"], s["private_mib"][name]) for s in samples if name in s["private_mib"]]
        each.plot([p[0] for p in points], [p[1] - points[0][1] for p in points], label=name)
    each.set_ylabel("change per process (MiB)")
    each.legend(fontsize=5, ncol=2)
    for ax in (total, each):
        ax.axvline(result["warmup_s"], color="grey", linestyle=":")
    done.plot(t, [s["good_ok"] for s in samples], marker=".")
    done.set_ylabel("good requests done")
    done.set_xlabel("seconds")
    total.set_title(f"soak: concurrency {result['concurrency']}, {result['duration_s']:.0f} s (dotted: end of warm-up)")
    fig.savefig(out / "soak.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def markdown(result: dict) -> str:
    rows = [
        "| good answered | good failed | good past the context (400, right) | bad refused right "
        "| bad answered wrong | 429 | private memory first / max / last (GiB) "
        "| after warm-up: gained (MiB), slope (MiB/h) | processes before / after |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['good_ok']} | {result['good_failed']} | {result['good_too_long']} | {result['bad_ok']} "
        f"| {result['bad_wrong']} | "
        f"{result['refused_429']} | {result['private_gib_first']:.2f} / {result['private_gib_max']:.2f} / "
        f"{result['private_gib_last']:.2f} | {result['gained_mib']:+.0f}, {result['mib_per_hour']:+.0f} | "
        f"{result['processes_before']} / {result['processes_after']} |",
        "",
        f"Per process after the warm-up ({result['warmup_s']:.0f} s), largest slope first:",
        "",
        "| process | private MiB at warm-up end / last | gained MiB | slope MiB/h |",
        "|---|---|---|---|",
    ]
    by_slope = sorted(result["growth_after_warmup"].items(), key=lambda kv: -kv[1]["mib_per_hour"])
    rows += [
        f"| {name} | {g['start_mib']:.0f} / {g['end_mib']:.0f} | {g['gained_mib']:+.1f} | {g['mib_per_hour']:+.1f} |"
        for name, g in by_slope
    ]
    return "\n".join(rows) + "\n"


def main() -> None:
    p = report.parser(__doc__, "base_url", "concurrency")
    p.add_argument("--duration-s", type=float, default=300)
    p.add_argument("--bad-share", type=float, default=0.2, help="share of requests that are bad")
    p.add_argument(
        "--warmup-s", type=float, help="memory growth is judged after this (default: a third of the duration)"
    )
    p.add_argument(
        "--max-mib-per-hour",
        type=float,
        default=256,
        help="fail when the app's private memory, summed over its processes, grows faster after the warm-up",
    )
    p.set_defaults(concurrency="16")
    args = p.parse_args()
    warmup_s = args.duration_s / 3 if args.warmup_s is None else args.warmup_s
    result = asyncio.run(
        soak(
            args.base_url, args.model, args.duration_s, int(args.concurrency), args.max_tokens, args.bad_share, warmup_s
        )
    )
    per_process = result["growth_after_warmup"].values()
    result["gained_mib"] = round(sum(g["gained_mib"] for g in per_process), 1)
    result["mib_per_hour"] = round(sum(g["mib_per_hour"] for g in per_process), 1)
    result["bounded"] = result["mib_per_hour"] <= args.max_mib_per_hour
    report.write(args.out, "soak", result, markdown(result))
    plot(args.out, result)
    ok = result["bounded"] and not (
        result["good_failed"] or result["bad_wrong"] or result["processes_gone"] or result["processes_new"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
