"""Request workloads for the benchmarks: the testbed's kinds of request.

Each kind is made by its generator in `cluster/testmodels/tasks.py` (documented there), the
same way the test target's training examples were made, so the served model does with them
what it learned to do. The kinds whose answers copy the prompt come from held-out text (the
model must copy, it cannot recall); chat and free-form continuation come from the text the
model learnt, as a real model is asked about what it knows (`tasks.served`):

- code_edit: a snippet and an edit instruction (chat); the answer copies the snippet, edited.
- code_edit_completion: the same as a completion ending in `# edited version:`.
- summarize: a long document; the answer quotes its lead and one later sentence, or lists its
  definitions.
- rag: three passages and a question; the answer quotes one passage.
- agentic: a tool loop cut at one assistant turn; tool calls repeat one JSON structure and
  quote the observations.
- chat: a question whose answer (reference prose, a docstring the model learnt) is not in the
  prompt.
- free_form: a passage of reference prose to continue from its title and first sentences.

`mixed` draws kinds in the stated proportions `MIX`, with no class hints, for the router.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cluster.testmodels import tasks

# What a coding assistant's traffic might look like; every kind the router must tell apart.
MIX = {"code_edit": 0.25, "summarize": 0.15, "rag": 0.1, "agentic": 0.2, "chat": 0.3}


@dataclass(frozen=True)
class Workload:
    name: str
    bodies: tuple[dict, ...]  # OpenAI bodies: "messages" (chat) or "prompt" (completion)
    max_tokens: int


def of_kind(kind: str, count: int, max_tokens: int, seed: int = 11) -> Workload:
    examples = tasks.served(kind, count, seed)
    return Workload(kind, tuple({**e.body(), "max_tokens": max_tokens} for e in examples), max_tokens)


def mixed(count: int, max_tokens: int, seed: int = 17) -> list[dict]:
    """`count` request bodies in the proportions of `MIX`, shuffled with `seed`."""
    rng = random.Random(seed)
    counts = {kind: round(count * share) for kind, share in MIX.items()}
    counts["chat"] += count - sum(counts.values())
    bodies = [b for kind, n in counts.items() if n > 0 for b in of_kind(kind, n, max_tokens, seed).bodies]
    rng.shuffle(bodies)
    return bodies
