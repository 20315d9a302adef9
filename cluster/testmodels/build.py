"""Build (or reuse from the cache) the test target and draft models.

    python -m cluster.testmodels.build [--out DIR] [--force]

Writes DIR/target, DIR/draft (Hugging Face Llama checkpoints sharing one tokenizer) and
DIR/report.json with the acceptance and cost that vLLM measured for the pair. The cache is
keyed on this package's source and the Python version (whose standard library is the corpus),
so a changed recipe rebuilds and an unchanged one returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cluster.testmodels import corpus
from cluster.testmodels.llama import Shape, distill, expand, greedy_continuations, new_model, train_lm
from cluster.testmodels.tokenizer import save_tokenizer, train_tokenizer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = PROJECT_ROOT / ".cache" / "testmodels"


@dataclass(frozen=True)
class Recipe:
    vocab_size: int = 2048
    max_positions: int = 2048
    seq_len: int = 256
    trained_target: Shape = Shape(layers=2, hidden=128, intermediate=384)
    # The served target: the trained one embedded into this shape, for the cost of a bigger model.
    served_target: Shape = Shape(layers=8, hidden=768, intermediate=2048)
    draft: Shape = Shape(layers=1, hidden=128, intermediate=384)
    target_steps: int = 400
    draft_steps: int = 300
    batch: int = 16
    lr: float = 3e-3
    copy_fraction: float = 0.3
    distill_prompts: int = 256
    distill_new_tokens: int = 128
    seed: int = 1234


def cache_key(recipe: Recipe) -> str:
    h = hashlib.sha256(sys.version.encode())
    h.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def _windows(ids: list[int], seq_len: int) -> list[list[int]]:
    return [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len, seq_len // 2)]


def _training_sequences(tok, recipe: Recipe, rng: random.Random) -> torch.Tensor:
    """Plain code windows plus code-edit examples (code, marker, the code again, edited)."""
    seqs: list[list[int]] = []
    for text in corpus.read_texts(held_out=False):
        seqs += _windows(tok.encode(text).ids, recipe.seq_len)
    n_copy = int(len(seqs) * recipe.copy_fraction / (1 - recipe.copy_fraction))
    for snippet in corpus.code_snippets(held_out=False, lines=6, count=n_copy, seed=recipe.seed):
        prompt, answer = corpus.edit_example(snippet, rng)
        ids = tok.encode(prompt + answer + "\n").ids[: recipe.seq_len]
        filler = tok.encode("\n").ids
        seqs.append(ids + filler * (recipe.seq_len - len(ids)))
    rng.shuffle(seqs)
    return torch.tensor(seqs, dtype=torch.long)


def _save(model, tok, out: Path, max_positions: int) -> None:
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tok, out, max_positions)


def build(out: Path, recipe: Recipe) -> dict:
    torch.manual_seed(recipe.seed)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(recipe.seed)
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    tok = train_tokenizer(corpus.read_texts(held_out=False), recipe.vocab_size)
    sequences = _training_sequences(tok, recipe, rng)
    timings["data_s"] = time.monotonic() - t0

    t = time.monotonic()
    small = new_model(recipe.trained_target, recipe.vocab_size, recipe.max_positions, recipe.seed)
    target_loss = train_lm(small, sequences, recipe.target_steps, recipe.batch, recipe.lr, recipe.seed)
    timings["target_train_s"] = time.monotonic() - t

    # The draft learns from what the target actually generates, as it must predict at serve time.
    t = time.monotonic()
    prompt_len = recipe.seq_len - recipe.distill_new_tokens
    starts = sequences[torch.randperm(len(sequences))[: recipe.distill_prompts], :prompt_len]
    generated = torch.cat([greedy_continuations(small, chunk, recipe.distill_new_tokens)
                           for chunk in starts.split(32)])
    distill_set = torch.cat([generated, sequences[: len(generated)]])
    draft = new_model(recipe.draft, recipe.vocab_size, recipe.max_positions, recipe.seed + 1)
    draft.model.embed_tokens.weight.data.copy_(small.model.embed_tokens.weight)
    draft.lm_head.weight.data.copy_(small.lm_head.weight)
    draft_miss = distill(draft, small, distill_set, recipe.draft_steps, recipe.batch, recipe.lr, recipe.seed)
    timings["draft_distill_s"] = time.monotonic() - t

    big = expand(small, recipe.served_target)
    probe = sequences[:2, :64]
    expansion_error = (big(input_ids=probe).logits - small(input_ids=probe).logits).abs().max().item()
    _save(big, tok, out / "target", recipe.max_positions)
    _save(draft, tok, out / "draft", recipe.max_positions)
    timings["train_total_s"] = time.monotonic() - t0
    return {
        "target_train_loss": round(target_loss, 4),
        "draft_distill_hard_loss": round(draft_miss, 4),
        "expansion_max_logit_error": expansion_error,
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }


def measure(out: Path) -> dict:
    """vLLM's own counters for the pair, in a child process (vLLM spawns its engine core)."""
    proc = subprocess.run([sys.executable, "-m", "cluster.testmodels.measure", str(out)],
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_built(out: Path = DEFAULT_OUT, force: bool = False) -> dict:
    recipe = Recipe()
    key = cache_key(recipe)
    report_path = out / "report.json"
    if not force and report_path.exists():
        report = json.loads(report_path.read_text())
        if report.get("cache_key") == key:
            return report
    out.mkdir(parents=True, exist_ok=True)
    report_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    report = {"cache_key": key, "recipe": asdict(recipe), **build(out, recipe)}
    report["measured"] = measure(out)
    report["timings"]["build_total_s"] = round(time.monotonic() - t0, 1)
    report_path.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = ensure_built(args.out, args.force)
    m = report["measured"]
    print(f"test models in {args.out}")
    print(f"  draft acceptance (greedy, code, k={m['k']}): {m['acceptance_rate']:.3f}"
          f"  mean acceptance length {m['mean_acceptance_length']:.2f}")
    print(f"  cost per token: target {m['target_ms_per_token']:.2f} ms, draft {m['draft_ms_per_token']:.2f} ms"
          f"  ratio {m['cost_ratio']:.1f}x")
    print(f"  build time {report['timings'].get('build_total_s', 0)} s")


if __name__ == "__main__":
    main()
