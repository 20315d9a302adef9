"""Soak the running app: good and bad requests mixed, for minutes, at a fixed concurrency.

    .venv/bin/python -m cluster.benchmarks.soak --duration-s 300 --concurrency 16 --out bench-results

Every client loops until the time is up. A good request (the testbed's mixed workload, streamed)
must end with a finish reason and tokens; a bad one (broken JSON, invalid UTF-8, an unknown
model, a negative max_tokens, an unknown method header, a body over the size limit) must get
its 4xx in the OpenAI error shape. Every 10 s it samples the resident memory of the app's
processes (Ray's and vLLM's, found by their command lines) and their count. Writes
DIR/soak.json, DIR/soak.md and DIR/soak.png (memory and completed requests over time); exits
non-zero if a good request failed, a bad one got another answer, or processes were left over
or gone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

import httpx
import psutil

from cluster.benchmarks import report, workloads
from cluster.benchmarks.http_load import RequestFailed, stream_request

APP_PROCESS_MARKERS = ("ServeReplica:", "ServeController", "ProxyActor", "EngineCore", "VLLM", "raylet", "gcs_server")
SAMPLE_S = 10.0


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


def rss_gib(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**30


async def soak(
    base_url: str, model: str, duration_s: float, concurrency: int, max_tokens: int, bad_share: float
) -> dict:
    good_bodies = itertools.cycle({**b, "model": model} for b in workloads.mixed(200, max_tokens))
    bad = itertools.cycle(bad_requests(model))
    tally = {"good_ok": 0, "good_failed": 0, "bad_ok": 0, "bad_wrong": 0, "refused_429": 0, "tokens": 0}
    failures: list[str] = []
    samples: list[dict] = []
    end = time.monotonic() + duration_s
    counter = itertools.count()

    async def good(client: httpx.AsyncClient, body: dict) -> None:
        try:
            result = await stream_request(client, body, {})
        except RequestFailed as e:
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
            samples.append(
                {
                    "t_s": round(time.monotonic() - start, 1),
                    "rss_gib": round(rss_gib(procs), 3),
                    "processes": len(procs),
                    "good_ok": tally["good_ok"],
                }
            )
            report.progress(f"soak {samples[-1]}")
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
        "rss_gib_first": samples[0]["rss_gib"],
        "rss_gib_max": max(s["rss_gib"] for s in samples),
        "rss_gib_last": samples[-1]["rss_gib"],
        "samples": samples,
        "failures": failures[:20],
    }


def plot(out, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] for s in result["samples"]]
    fig, (mem, done) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    mem.plot(t, [s["rss_gib"] for s in result["samples"]], marker=".")
    mem.set_ylabel("app RSS (GiB)")
    done.plot(t, [s["good_ok"] for s in result["samples"]], marker=".")
    done.set_ylabel("good requests done")
    done.set_xlabel("seconds")
    mem.set_title(f"soak: concurrency {result['concurrency']}, {result['duration_s']:.0f} s")
    fig.savefig(out / "soak.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    p = report.parser(__doc__, "base_url", "concurrency")
    p.add_argument("--duration-s", type=float, default=300)
    p.add_argument("--bad-share", type=float, default=0.2, help="share of requests that are bad")
    p.set_defaults(concurrency="16")
    args = p.parse_args()
    result = asyncio.run(
        soak(args.base_url, args.model, args.duration_s, int(args.concurrency), args.max_tokens, args.bad_share)
    )
    table = "\n".join(
        [
            "| good answered | good failed | bad refused right | bad answered wrong | 429 "
            "| app RSS first / max / last (GiB) | processes before / after |",
            "|---|---|---|---|---|---|---|",
            f"| {result['good_ok']} | {result['good_failed']} | {result['bad_ok']} | {result['bad_wrong']} | "
            f"{result['refused_429']} | {result['rss_gib_first']:.2f} / {result['rss_gib_max']:.2f} / "
            f"{result['rss_gib_last']:.2f} | {result['processes_before']} / {result['processes_after']} |",
            "",
        ]
    )
    report.write(args.out, "soak", result, table)
    plot(args.out, result)
    ok = not (result["good_failed"] or result["bad_wrong"] or result["processes_gone"] or result["processes_new"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
