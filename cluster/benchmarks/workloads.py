"""Request mixes for the benchmarks, drawn from held-out standard-library code.

- code_edit: "here is code, now the edited version" prompts. A real model copies most of the
  prompt (what prompt lookup / ngram speculation is for); the test target does not learn to copy
  and only repeats its own phrases, so ngram gains less here than it would on a 70B model.
- free_form: the opening lines of held-out code to continue; little to copy from the prompt.
- mixed: code edits, chat questions and summaries in known proportions, as chat and
  completion bodies without any class hint, for the router to classify.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cluster.testmodels import corpus


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: tuple[str, ...]
    max_tokens: int


def code_edit(count: int, max_tokens: int, seed: int = 11) -> Workload:
    rng = random.Random(seed)
    snippets = corpus.code_snippets(held_out=True, lines=8, count=count, seed=seed)
    return Workload("code_edit", tuple(corpus.edit_example(s, rng)[0] for s in snippets), max_tokens)


def free_form(count: int, max_tokens: int, seed: int = 13) -> Workload:
    return Workload("free_form", tuple(corpus.code_snippets(held_out=True, lines=4, count=count, seed=seed)),
                    max_tokens)


def mixed(count: int, max_tokens: int, seed: int = 17) -> list[dict]:
    """`count` request bodies: 50% code edits, 30% chat, 20% summaries, shuffled with `seed`."""
    rng = random.Random(seed)
    n_edit, n_chat = count // 2, count * 3 // 10
    n_summary = count - n_edit - n_chat
    edits = code_edit(n_edit, max_tokens, seed).prompts
    chats = corpus.code_snippets(held_out=True, lines=2, count=n_chat, seed=seed + 1)
    docs = corpus.code_snippets(held_out=True, lines=30, count=n_summary, seed=seed + 2)
    bodies = [{"prompt": p, "max_tokens": max_tokens} for p in edits]
    bodies += [{"messages": [{"role": "user", "content": f"Tell me about {c.strip()[:60]}"}], "max_tokens": max_tokens}
               for c in chats]
    bodies += [{"messages": [{"role": "user", "content": f"Summarize this document:\n{d}"}], "max_tokens": max_tokens}
               for d in docs]
    rng.shuffle(bodies)
    return bodies
