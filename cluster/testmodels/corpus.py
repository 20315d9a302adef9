"""Training and evaluation text taken from a Python standard library.

Two kinds of text: code (the library's modules and packages, minus tests and generated
tables) and prose (the language reference's topics in `pydoc_data`). Each is split
deterministically, by a hash of its name, into a training set and a held-out set; requests
whose answers copy the prompt are drawn from the held-out set, so copying there cannot be
recall (`tasks.served` says which kinds come from which set).

The weights are trained on a GPU machine whose Python differs from this one's, so the text
work happens here and travels as token arrays (`dataset.py`).
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Folders whose files teach nothing a code model should know (tests, generated tables).
_SKIPPED_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "lib2to3",
    "turtledemo",
    "encodings",
    "pydoc_data",
    "ensurepip",
    "__pycache__",
}
_MIN_FILE_BYTES = 2000


def _is_held_out(name: str) -> bool:
    return hashlib.sha256(name.encode()).digest()[0] % 8 == 0


@dataclass(frozen=True)
class Text:
    name: str
    text: str


@dataclass(frozen=True)
class Corpus:
    code: tuple[Text, ...]
    prose: tuple[Text, ...]

    def split(self, held_out: bool) -> Corpus:
        return Corpus(
            tuple(t for t in self.code if _is_held_out(t.name) == held_out),
            tuple(t for t in self.prose if _is_held_out(t.name) == held_out),
        )

    @staticmethod
    def from_stdlib() -> Corpus:
        root = Path(sysconfig.get_paths()["stdlib"])
        code = []
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if any(part in _SKIPPED_DIRS or part.startswith(("test", "config-")) for part in rel.parts[:-1]):
                continue
            if path.stat().st_size > _MIN_FILE_BYTES:
                code.append(Text(rel.as_posix(), path.read_text(encoding="utf-8", errors="replace")))
        from pydoc_data import topics

        prose = [Text(name, text) for name, text in sorted(topics.topics.items())]
        return Corpus(tuple(code), tuple(prose))


_STDLIB: Corpus | None = None


def stdlib(held_out: bool) -> Corpus:
    """This interpreter's standard library, split (cached per process)."""
    global _STDLIB
    if _STDLIB is None:
        _STDLIB = Corpus.from_stdlib()
    return _STDLIB.split(held_out)
