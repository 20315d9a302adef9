"""Request mixes for the benchmarks, drawn from held-out standard-library code.

- code_edit: "here is code, now the edited version" prompts; the answer copies most of the
  prompt (what prompt lookup / ngram speculation is for).
- free_form: the opening lines of held-out code to continue; little to copy from the prompt.
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
