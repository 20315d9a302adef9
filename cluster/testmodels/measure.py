"""Measure the built target/draft pair with vLLM on CPU (run as child processes).

    python -m cluster.testmodels.measure DIR OUT_JSON ENGINE [ENGINE ...]

ENGINE is one of `ENGINES` (none, ngram, draft_model, draft_alone), run one after another in
this process; the build runs two such processes side by side, one per core
(`VLLM_CPU_OMP_THREADS_BIND`), and merges their results (`merge`).

For each kind of request (`tasks.py`, prompts from the held-out corpus) it measures, with
vLLM's own spec-decode counters, how many draft tokens prompt lookup (`ngram`) and the draft
model (`draft_model`) get accepted at k=4, greedy and sampled at temperature 1; and, for
code edits, chat and free-form continuation, the wall time per token at batch 1 of no
speculation, ngram and the draft model, so each method's speedup is measured in one run on
the same prompts. Also the cost per token of the target and of the draft alone. Writes OUT_JSON;
progress goes to stderr.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import Counter

from cluster.testmodels import tasks

K = 4
NEW_TOKENS = 64
TIMED_NEW_TOKENS = 48  # timing needs fewer tokens than acceptance (chat answers run 50-60)
ACCEPTANCE_PROMPTS = 8
# Prompts of 500-700 tokens (a document, passages, a tool loop): prefilling them is two thirds
# of an engine's acceptance run, so these kinds get fewer prompts (as many tokens all the same).
LONG_PROMPT_KINDS, LONG_PROMPTS = ("summarize", "rag", "agentic"), 5
TIMED_PROMPTS = 2
TIMED_KINDS = ("code_edit", "chat", "free_form")
SAMPLED_KINDS = ("code_edit", "chat")
METHODS = {
    "none": None,
    "ngram": {"method": "ngram", "num_speculative_tokens": K, "prompt_lookup_min": 2, "prompt_lookup_max": 4},
    "draft_model": {"method": "draft_model", "num_speculative_tokens": K},  # the built draft added in main
}


_START = time.monotonic()


def _log(msg: str) -> None:
    print(f"  [{time.monotonic() - _START:4.0f}s] {msg}", file=sys.stderr, flush=True)


def _engine(model: str, speculative_config=None):
    from vllm import LLM

    # Eager: starts in half the time (no graph compile), and every method pays alike. One process
    # (`main` turns off the engine-core process; "uni" keeps the worker in it): an engine starts in
    # 5 s instead of 30, most of which went to two more processes importing vLLM. Per-request
    # acceptance lets one batched call measure every kind (`_acceptance`).
    per_request = {"per_request_spec_decode_metrics": "summary"} if speculative_config else {}
    return LLM(
        model=model,
        dtype="float32",
        max_model_len=1024,
        seed=0,
        enable_prefix_caching=False,
        enforce_eager=True,
        distributed_executor_backend="uni",
        speculative_config=speculative_config,
        **per_request,
    )


def _params(temperature: float, new_tokens: int = NEW_TOKENS):
    from vllm import SamplingParams

    # Answers end at the end-of-turn token, as served answers do.
    return SamplingParams(temperature=temperature, max_tokens=new_tokens, seed=0)


def _prompts(kind: str, count: int) -> list[str]:
    return [e.prompt_text() for e in tasks.served(kind, count, seed=3)]


def _acceptance(llm, prompts: dict[str, list[str]], temperature: float) -> dict[str, dict]:
    """Per kind, from vLLM's per-request counters: every kind's prompts go in one batched call,
    which took a third of the time of a call per kind."""
    kinds = [kind for kind, texts in prompts.items() for _ in texts]
    outs = llm.generate([t for texts in prompts.values() for t in texts], _params(temperature), use_tqdm=False)
    sums = {kind: Counter() for kind in prompts}
    for kind, out in zip(kinds, outs):
        m = out.outputs[0].spec_decode_metrics  # histogram[j]: verify steps that accepted j drafts
        sums[kind].update(
            steps=sum(m.histogram),
            accepted=sum(j * n for j, n in enumerate(m.histogram)),
            drafted=m.num_draft_tokens,
            tokens=len(out.outputs[0].token_ids),
        )
    return {
        kind: {
            "acceptance_rate": c["accepted"] / c["drafted"] if c["drafted"] else None,
            "mean_acceptance_length": 1 + c["accepted"] / c["steps"] if c["steps"] else None,
            "mean_output_tokens": c["tokens"] / len(prompts[kind]),
        }
        for kind, c in sums.items()
    }


def _ms_per_token(llm, prompts: list[str]) -> float:
    """Batch 1, one prompt after another: the regime where drafting pays."""
    tokens, start = 0, time.perf_counter()
    for prompt in prompts:
        tokens += len(llm.generate([prompt], _params(0.0, TIMED_NEW_TOKENS), use_tqdm=False)[0].outputs[0].token_ids)
    return (time.perf_counter() - start) * 1000 / tokens


DRAFT_ALONE = "draft_alone"
ENGINES = (*METHODS, DRAFT_ALONE)


def run_engine(name: str, model_dir: str, prompts: dict[str, list[str]]) -> dict:
    """One engine's measurements: acceptance per kind (speculating engines) and ms per token."""
    target, draft = f"{model_dir}/target", f"{model_dir}/draft"
    _log(f"engine with {name}")
    if name == DRAFT_ALONE:
        llm = _engine(draft)
    else:
        spec = METHODS[name]
        llm = _engine(target, {**spec, "model": draft} if name == "draft_model" else spec)
    _ms_per_token(llm, prompts["chat"][:1])  # warm-up (the ngram proposer compiles on first use)
    _log(f"{name} started")
    out: dict = {"acceptance": {}, "ms_per_token": {}}
    if name in METHODS and METHODS[name]:
        for kind, row in _acceptance(llm, prompts, 0.0).items():
            out["acceptance"][kind] = {name: row}
        for kind, row in _acceptance(llm, {k: prompts[k] for k in SAMPLED_KINDS}, 1.0).items():
            out["acceptance"][kind][f"{name}_sampled"] = row
        _log(f"{name}: acceptance measured")
    # The draft alone costs a few ms per token, mostly per-step overhead: timed on two prompts it
    # varied 3.8-5.6 ms between builds, so it gets every prompt of the kind (a few seconds more).
    timed = ACCEPTANCE_PROMPTS if name == DRAFT_ALONE else TIMED_PROMPTS
    for kind in TIMED_KINDS:
        out["ms_per_token"][kind] = {name: _ms_per_token(llm, prompts[kind][:timed])}
    _log(f"{name}: ms per token {json.dumps({k: round(v[name], 1) for k, v in out['ms_per_token'].items()})}")
    del llm
    return out


def merge(parts: list[dict]) -> dict:
    """The engines' results as one report, with each method's speedup and the cost ratio."""
    result: dict = {"k": K, "new_tokens": NEW_TOKENS, "acceptance": {}, "ms_per_token": {}}
    for part in parts:
        for section in ("acceptance", "ms_per_token"):
            for kind, row in part[section].items():
                result[section].setdefault(kind, {}).update(row)
    draft_ms = statistics.mean(row.pop(DRAFT_ALONE) for row in result["ms_per_token"].values())
    for row in result["ms_per_token"].values():
        row["speedup"] = {m: row["none"] / row[m] for m in METHODS if m != "none"}
    target_ms = statistics.mean(row["none"] for row in result["ms_per_token"].values())
    result.update(target_ms_per_token=target_ms, draft_ms_per_token=draft_ms, cost_ratio=target_ms / draft_ms)
    return result


def main(model_dir: str, out_json: str, engines: list[str]) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # In one process vLLM does not bind its OpenMP threads; two such processes on two cores, each
    # with a thread per core, ran 3x slower. One thread on the core the build gave this process.
    core = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "")
    if core.isdigit():
        os.sched_setaffinity(0, {int(core)})
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
    prompts = {
        kind: _prompts(kind, LONG_PROMPTS if kind in LONG_PROMPT_KINDS else ACCEPTANCE_PROMPTS)
        for kind in tasks.GENERATORS
    }
    parts = [run_engine(name, model_dir, prompts) for name in engines]
    with open(out_json, "w") as f:
        json.dump(parts, f)


if __name__ == "__main__":
    if len(sys.argv) < 4 or set(sys.argv[3:]) - set(ENGINES):
        sys.exit(f"usage: python -m cluster.testmodels.measure DIR OUT_JSON ENGINE [ENGINE ...] ({', '.join(ENGINES)})")
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
