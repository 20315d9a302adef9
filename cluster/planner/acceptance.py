"""Acceptance per request class and method the planner assumes when no measured figures are given.

Each entry is alpha, the chance a draft token is accepted given the ones before it were (the
i.i.d. model of Leviathan et al. 2023), so P(the first p+1 drafts are accepted) = alpha^(p+1).
A user replaces them with the acceptance their own traffic shows (`--acceptance FILE`, a JSON
object {class: {method: alpha}}), e.g. from the spec tuner's `GET /v1/spec/router` on a pilot.
"""

from __future__ import annotations

import json
from pathlib import Path

# Sources: EAGLE-3 on chat (MT-Bench) about 3.2 tokens per step at k=4 with a chain, alpha
# 0.73 (EAGLE-3 paper and vLLM's EAGLE-3 PR 16937 runs; SGLang's 5.88 is a 64-token tree); a
# 1B draft for a 70B target on chat about 0.6 (vLLM's spec-decode blog: up to 1.5x on ShareGPT);
# prompt lookup on code edits and summaries, where answers copy the prompt, about 0.8 and 0.6
# (vLLM's blog: up to 2.8x on CNN/DailyMail; a code-editing study on Llama-3-70B found n-gram
# beating EAGLE once prompt/output overlap passes about 0.6 BLEU-4), and on chat about 0.25.
# These are estimates from published speedups, not measurements of this project's traffic.
PUBLISHED_ALPHA: dict[str, dict[str, float]] = {
    "chat": {"eagle3": 0.73, "eagle": 0.65, "draft_model": 0.6, "remote_draft": 0.6, "ngram": 0.25},
    "code_edit": {"ngram": 0.8, "eagle3": 0.7, "eagle": 0.62, "draft_model": 0.6, "remote_draft": 0.6},
    "summarize": {"ngram": 0.6, "eagle3": 0.62, "eagle": 0.55, "draft_model": 0.55, "remote_draft": 0.55},
    "agentic": {"ngram": 0.7, "eagle3": 0.68, "eagle": 0.6, "draft_model": 0.58, "remote_draft": 0.58},
}
FALLBACK_ALPHA = {"ngram": 0.3, "eagle3": 0.7, "eagle": 0.6, "draft_model": 0.55, "remote_draft": 0.55}


def load(path: Path | None) -> dict[str, dict[str, float]]:
    table = {c: dict(m) for c, m in PUBLISHED_ALPHA.items()}
    if path is not None:
        for request_class, methods in json.loads(path.read_text()).items():
            for method, alpha in methods.items():
                if not 0 <= alpha < 1:
                    raise ValueError(f"{path}: {request_class}.{method} = {alpha}: alpha must be in [0, 1)")
            table.setdefault(request_class, {}).update(methods)
    return table


def alpha(table: dict[str, dict[str, float]], request_class: str, method: str) -> float:
    return table.get(request_class, {}).get(method, FALLBACK_ALPHA.get(method, 0.5))


def survival(a: float, k_max: int) -> list[float]:
    return [a ** (p + 1) for p in range(k_max)]
