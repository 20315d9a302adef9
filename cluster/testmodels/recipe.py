"""The recipe of the test models: what the data holds and how the pair is trained.

One dataclass for both commands: `dataset.py` (here, CPU) reads the data fields and
`train.py` (on the GPU) the rest; both take the same `--set FIELD=VALUE` overrides, and the
manifest records the whole recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from cluster.testmodels.llama import Shape

# The fields `dataset.py` turns into token arrays; training reads them from the data's recipe.json.
DATA_FIELDS = ("vocab_size", "max_positions", "seq_len", "examples_per_kind", "eval_prompts", "eval_new_tokens", "seed")


@dataclass(frozen=True)
class Recipe:
    target: Shape = Shape(layers=4, hidden=256, intermediate=768)
    # Two layers: a one-layer draft cannot form the induction heads that copying needs, and agreed
    # with the target on 0.22 of free text; the served target still costs 8x+ per token (vLLM's
    # per-step overhead, not the draft's width, sets a small draft's cost on CPU).
    draft: Shape = Shape(layers=2, hidden=256, intermediate=768)
    vocab_size: int = 2048
    max_positions: int = 2048
    seq_len: int = 1024  # summaries, passages and tool loops run to 700+ tokens; rows must hold them
    batch: int = 32
    copy_warmup_steps: int = 2000
    target_steps: int = 5000
    copy_fraction: float = 0.3
    lr: float = 1e-3
    examples_per_kind: int = 8000
    draft_steps: int = 3000
    draft_lr: float = 2e-3
    eval_prompts: int = 48
    eval_new_tokens: int = 128
    seed: int = 1234
    # Wall-clock caps (s) on the two training loops, for a machine lent by the minute; a loop
    # that reaches its cap stops there (recorded in the report) and its schedule anneals by it.
    max_target_s: float = 1e9
    max_draft_s: float = 1e9
    # Continue from a trained target (its safetensors) instead of a fresh one.
    init_target: str = ""
    # The target layers the draft starts from (comma-separated indices, one per draft layer),
    # with the target's embedding, final norm and head; empty: a fresh draft. Tried once (330 s
    # each, five runs sharing one H200): simulated draft acceptance on free_form 0.22 fresh,
    # 0.30 from layers 0,3, 0.34 for a 3-layer draft from 0,1,3; but on code edits 0.18 rose to
    # 0.50-0.54 too, close to prompt lookup's 0.67, so the shipped draft stays fresh.
    draft_init_layers: str = ""


def parse_overrides(items: list[str], base: Recipe | None = None) -> Recipe:
    """`FIELD=VALUE` strings over `base` (the defaults); shapes are `layers,hidden,intermediate`."""
    base = base or Recipe()
    names = [f.name for f in fields(Recipe)]
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(names)}")
        current = getattr(base, key)
        values[key] = Shape(*map(int, value.split(","))) if isinstance(current, Shape) else type(current)(value)
    return replace(base, **values)
