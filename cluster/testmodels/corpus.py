"""Training and evaluation text taken from the running interpreter's standard library.

Files are split deterministically (by a hash of their name) into a training set and a
held-out set; benchmarks and acceptance measurements draw their prompts from the held-out
set so they never score the models on text they were trained on.
"""

from __future__ import annotations

import hashlib
import random
import sysconfig
from pathlib import Path

# Marks where a code-edit answer starts: the code above it, edited, is the answer to learn.
EDIT_MARKER = "\n# edited version:\n"


def _stdlib_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.glob("*.py") if p.stat().st_size > 2000)


def _is_held_out(path: Path) -> bool:
    return hashlib.sha256(path.name.encode()).digest()[0] % 8 == 0


def read_texts(held_out: bool) -> list[str]:
    """Source files of the training split, or of the held-out split."""
    return [
        p.read_text(encoding="utf-8", errors="replace")
        for p in _stdlib_files()
        if _is_held_out(p) == held_out
    ]


def code_snippets(held_out: bool, lines: int, count: int, seed: int) -> list[str]:
    """`count` runs of `lines` consecutive non-trivial source lines, chosen with `seed`."""
    rng = random.Random(seed)
    texts = [t.splitlines() for t in read_texts(held_out)]
    texts = [t for t in texts if len(t) > lines * 2]
    out: list[str] = []
    while len(out) < count:
        src = rng.choice(texts)
        start = rng.randrange(0, len(src) - lines)
        chunk = src[start : start + lines]
        if sum(len(line.strip()) > 0 for line in chunk) >= lines * 0.7:
            out.append("\n".join(chunk))
    return out


def edit_example(snippet: str, rng: random.Random) -> tuple[str, str]:
    """A code-edit prompt and its answer: the snippet again with one identifier renamed."""
    words = sorted({w for w in snippet.replace("(", " ").replace(")", " ").split() if w.isidentifier()})
    answer = snippet
    if words:
        old = rng.choice(words)
        answer = snippet.replace(old, old + "_v2")
    return snippet + EDIT_MARKER, answer
