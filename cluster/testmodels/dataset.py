"""Prepare everything the GPU training command reads: tokenizer and token arrays.

    python -m cluster.testmodels.dataset --out .gpu/testbed [--set FIELD=VALUE ...]

Runs here (CPU, a minute or two). All text work happens here, so the GPU machine runs only
tensor code: an earlier design made the examples there, in worker processes, and twice printed
nothing for ten minutes. Writes, for the recipe's data fields (`recipe.DATA_FIELDS`):
- OUT/tokenizer.json: a byte-level BPE trained on the training split of this interpreter's
  standard library (`corpus.py`), and OUT/tokenizer_check.json: texts with the ids this
  machine's `tokenizers` gives them, so the GPU machine can prove its library encodes alike;
- OUT/tokens.npz: rows of `seq_len` tokens for each kind of request (`tasks.py`) and for plain
  code and prose, all from the training split; and prompts and reference answers of every kind
  for the evaluation, from the split each kind is served from (`tasks.held_out_for`);
- OUT/recipe.json: the data fields it was made with.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cluster.testmodels import tasks
from cluster.testmodels.corpus import Corpus
from cluster.testmodels.recipe import DATA_FIELDS, Recipe, parse_overrides
from cluster.testmodels.tokenizer import train_tokenizer


def _rows(token_lists: list[list[int]], seq_len: int, rng: random.Random) -> np.ndarray:
    """Sequences in random order, packed end to end and cut into rows of `seq_len`."""
    order = list(range(len(token_lists)))
    rng.shuffle(order)
    flat = np.fromiter((t for i in order for t in token_lists[i]), dtype=np.uint16)
    n = len(flat) // seq_len
    return flat[: n * seq_len].reshape(n, seq_len)


def _ragged(name: str, lists: list[list[int]]) -> dict[str, np.ndarray]:
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    flat = np.fromiter((t for x in lists for t in x), dtype=np.uint16, count=int(lengths.sum()))
    return {f"{name}.flat": flat, f"{name}.offsets": np.concatenate([[0], np.cumsum(lengths)])}


def unragged(arrays, name: str) -> list[list[int]]:
    flat, offsets = arrays[f"{name}.flat"].astype(np.int64), arrays[f"{name}.offsets"]
    return [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


def prepare(out: Path, recipe: Recipe, log=print) -> None:
    out.mkdir(parents=True, exist_ok=True)
    corpus = Corpus.from_stdlib()
    train = corpus.split(held_out=False)
    tok = train_tokenizer([t.text for t in train.code + train.prose], recipe.vocab_size)
    tok.save(str(out / "tokenizer.json"))
    samples = [tasks.examples(kind, train, 1, seed=0)[0].training_text() for kind in tasks.GENERATORS]
    (out / "tokenizer_check.json").write_text(json.dumps([[s, tok.encode(s).ids] for s in samples]))
    log(f"corpus: {len(corpus.code)} code files, {len(corpus.prose)} reference topics")

    def ids(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(texts)]

    rng = random.Random(recipe.seed)
    arrays: dict[str, np.ndarray] = {}
    for kind in tasks.GENERATORS:
        texts = [e.training_text() for e in tasks.examples(kind, train, recipe.examples_per_kind, recipe.seed)]
        arrays[f"rows.{kind}"] = _rows(ids(texts), recipe.seq_len, rng)
        log(f"{kind}: {len(arrays[f'rows.{kind}'])} rows")
    for name, texts in (("code", train.code), ("prose", train.prose)):
        arrays[f"rows.{name}"] = _rows(ids([t.text for t in texts]), recipe.seq_len, rng)
        log(f"{name}: {len(arrays[f'rows.{name}'])} rows")

    # Whole prompts, as served (up to the position limit): a model that never saw positions this
    # far must show it in the evaluation.
    keep = recipe.max_positions - recipe.eval_new_tokens
    for kind in tasks.GENERATORS:
        split = corpus.split(held_out=tasks.held_out_for(kind))
        examples = tasks.examples(kind, split, recipe.eval_prompts, seed=99)
        arrays.update(_ragged(f"eval.{kind}.prompt", [p[-keep:] for p in ids([e.prompt_text() for e in examples])]))
        arrays.update(_ragged(f"eval.{kind}.answer", ids([e.answer for e in examples])))
    np.savez_compressed(out / "tokens.npz", **arrays)
    data_recipe = {k: v for k, v in asdict(recipe).items() if k in DATA_FIELDS}
    (out / "recipe.json").write_text(json.dumps(data_recipe, indent=2) + "\n")
    log(f"wrote {out / 'tokens.npz'} ({(out / 'tokens.npz').stat().st_size / 2**20:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".gpu/testbed"))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override recipe fields")
    args = parser.parse_args()
    prepare(args.out, parse_overrides(args.set))


if __name__ == "__main__":
    main()
