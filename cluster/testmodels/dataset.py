"""Prepare what the GPU training command needs: the corpus and the tokenizer.

    python -m cluster.testmodels.dataset --out .gpu/testbed

Runs here (CPU, seconds). Writes OUT/corpus.json.gz (this interpreter's standard library, the
text the models are trained and measured on), OUT/tokenizer.json (a byte-level BPE trained on
the corpus's training split) and OUT/tokenizer_check.json (a few texts with the ids this
machine's `tokenizers` gives them, so the GPU machine can prove its library encodes alike).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cluster.testmodels import tasks
from cluster.testmodels.corpus import Corpus
from cluster.testmodels.tokenizer import train_tokenizer

VOCAB_SIZE = 2048


def prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    corpus = Corpus.from_stdlib()
    corpus.save(out / "corpus.json.gz")
    train = corpus.split(held_out=False)
    tok = train_tokenizer([t.text for t in train.code + train.prose], VOCAB_SIZE)
    tok.save(str(out / "tokenizer.json"))
    samples = [tasks.examples(kind, train, 1, seed=0)[0].training_text() for kind in tasks.GENERATORS]
    (out / "tokenizer_check.json").write_text(json.dumps([[s, tok.encode(s).ids] for s in samples]))
    print(f"corpus: {len(corpus.code)} code files, {len(corpus.prose)} reference topics -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".gpu/testbed"))
    prepare(parser.parse_args().out)


if __name__ == "__main__":
    main()
