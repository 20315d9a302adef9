"""Measure a built target/draft pair with vLLM's own counters (run as a child process).

    python -m cluster.testmodels.measure DIR

Prints one JSON line: the draft's greedy acceptance rate on held-out code (vLLM
`draft_model` speculation), and the cost per generated token of each model alone.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from cluster.testmodels import corpus

K = 3
NEW_TOKENS = 64


def _engine(model: str, **kwargs):
    from vllm import LLM

    return LLM(model=model, dtype="float32", max_model_len=1024, seed=0, disable_log_stats=False,
               enable_prefix_caching=False, **kwargs)


def _ms_per_token(llm, prompt: str) -> float:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    start = time.perf_counter()
    out = llm.generate([prompt], params, use_tqdm=False)  # batch 1: the regime where drafting pays
    return (time.perf_counter() - start) * 1000 / len(out[0].outputs[0].token_ids)


def _cost_ratio(target, draft, prompts: list[str]) -> tuple[float, float]:
    """Median ms per token of each model, timed alternately so that a passing load on the
    machine falls on both alike."""
    for llm in (target, draft):
        _ms_per_token(llm, prompts[0])  # warm-up
    target_ms, draft_ms = [], []
    for prompt in prompts:
        target_ms.append(_ms_per_token(target, prompt))
        draft_ms.append(_ms_per_token(draft, prompt))
    return statistics.median(target_ms), statistics.median(draft_ms)


def _counter(llm, name: str) -> float:
    return sum(m.value for m in llm.get_metrics() if m.name == name and hasattr(m, "value"))


def main(model_dir: str) -> None:
    from vllm import SamplingParams

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    target, draft = f"{model_dir}/target", f"{model_dir}/draft"
    prompts = corpus.code_snippets(held_out=True, lines=12, count=16, seed=7)
    timing_prompts = prompts[:6]

    spec = _engine(target, speculative_config={"method": "draft_model", "model": draft, "num_speculative_tokens": K})
    spec.generate(prompts, SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True), use_tqdm=False)
    drafts = _counter(spec, "vllm:spec_decode_num_drafts")
    proposed = _counter(spec, "vllm:spec_decode_num_draft_tokens")
    accepted = _counter(spec, "vllm:spec_decode_num_accepted_tokens")
    del spec

    target_ms, draft_ms = _cost_ratio(_engine(target), _engine(draft), timing_prompts)
    print(json.dumps({
        "k": K,
        "prompts": len(prompts),
        "acceptance_rate": accepted / proposed,
        "mean_acceptance_length": 1 + accepted / drafts,
        "target_ms_per_token": target_ms,
        "draft_ms_per_token": draft_ms,
        "cost_ratio": target_ms / draft_ms,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
