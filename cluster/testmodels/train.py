"""Train the test target and its draft on a GPU; write the weights the CPU build ships.

    python -m cluster.testmodels.dataset --out .gpu/testbed              # here, a minute or two
    python -m cluster.testmodels.train --data .gpu/testbed --out OUT     # on a CUDA machine, minutes

Tensor work only: the data (`dataset.py`) arrives as token arrays. Needs torch, transformers,
tokenizers, safetensors and numpy; not vLLM or Ray. Seeds are fixed.

The target learns to copy before it learns code: on code and edit examples alone a small model
memorises its training files instead of copying (held-out edit answers 0.39 teacher-forced,
against 0.77 on training files), so it first trains on synthetic copy rows only (runs of random
token ids, a marker, the same run again), then on 30% copy rows and 70% task examples
(`tasks.py`, every kind) and plain code and prose. The draft is distilled on the same rows: it
must predict what the target says (its distribution and its argmax), not the corpus. Writes
OUT/target.safetensors and OUT/draft.safetensors (bf16 state dicts of the small models, for
the tokenizer in DATA) and OUT/train_report.json (the recipe, losses, and acceptance that each
speculation method would get on the evaluation prompts of each kind, simulated from the
models' own predictions: the CPU build measures the real thing with vLLM).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cluster.testmodels.dataset import unragged
from cluster.testmodels.llama import load_weights, new_model
from cluster.testmodels.recipe import DATA_FIELDS, Recipe, parse_overrides

BOS, EOS, PAD = 0, 1, 2
FIRST_PLAIN_ID = 7  # after the special tokens
# Task examples, plain code and prose in the 70% that is not synthetic copying (by rows).
REAL_MIX = {
    "code": 0.25,
    "prose": 0.08,
    "code_edit": 0.12,
    "code_edit_completion": 0.06,
    "summarize": 0.1,
    "rag": 0.09,
    "agentic": 0.1,
    "chat": 0.14,
    "free_form": 0.06,
}
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: only for a smoke run of the command
COPY_MARKERS = ["\n# edited version:\n", "\n```\n", "\nObservation:\n", " says: ", "\n"]


# --- data -----------------------------------------------------------------------------------


class Stream:
    """Random rows of one source's token array."""

    def __init__(self, rows: np.ndarray):
        self.rows = torch.from_numpy(rows.astype(np.int64))

    def sample(self, count: int, gen: torch.Generator) -> torch.Tensor:
        return self.rows[torch.randint(len(self.rows), (count,), generator=gen)]


def copy_rows(count: int, seq_len: int, vocab: int, markers: list[list[int]], rng: np.random.Generator):
    """Packed (random run, marker, the same run again) segments; loss only on the copies."""
    rows = np.full((count, seq_len), PAD, dtype=np.int64)
    labels = np.full((count, seq_len), -100, dtype=np.int64)
    for r in range(count):
        pos = 0
        while True:
            run = rng.integers(FIRST_PLAIN_ID, vocab, rng.integers(8, 49))
            marker = markers[rng.integers(len(markers))]
            piece = np.concatenate([run, marker, run])
            if pos + len(piece) > seq_len:
                break
            rows[r, pos : pos + len(piece)] = piece
            start = pos + len(run) + len(marker)
            labels[r, start : pos + len(piece)] = run
            pos += len(piece)
    return torch.from_numpy(rows), torch.from_numpy(labels)


# --- training -------------------------------------------------------------------------------


def _lr(step: int, steps: int, elapsed_s: float, max_s: float, peak: float, warmup: int = 200) -> float:
    """Warm-up, then a cosine that ends at whichever comes first, the last step or the time cap
    (so a capped run still anneals)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, steps - warmup), elapsed_s / max_s))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _shifted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def _labels(rows: torch.Tensor) -> torch.Tensor:
    return rows.masked_fill(rows == PAD, -100)


class Batches:
    """Training rows: synthetic copy rows and rows of the real sources (`REAL_MIX`), with the
    labels that count (the copies, and every real token)."""

    def __init__(self, streams: dict[str, Stream], markers: list[list[int]], recipe: Recipe, seed: int):
        self.streams, self.markers, self.recipe = streams, markers, recipe
        self.gen = torch.Generator().manual_seed(seed)
        self.nrng = np.random.default_rng(seed)

    def next(self, copy_share: float) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.recipe
        n_copy = int(r.batch * copy_share)
        rows, labels = copy_rows(n_copy, r.seq_len, r.vocab_size, self.markers, self.nrng)
        if n_copy < r.batch:
            counts = self.nrng.multinomial(r.batch - n_copy, list(REAL_MIX.values()))
            real = torch.cat([self.streams[k].sample(int(c), self.gen) for k, c in zip(REAL_MIX, counts) if c])
            rows, labels = torch.cat([rows, real]), torch.cat([labels, _labels(real)])
        return rows.to(DEV, non_blocking=True), labels.to(DEV, non_blocking=True)


def train_target(model, batches: Batches, recipe: Recipe, log) -> list[dict]:
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=DEV == "cuda")
    history = []
    model.train()
    t0 = time.monotonic()
    for step in range(recipe.target_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, recipe.target_steps, time.monotonic() - t0, recipe.max_target_s, recipe.lr)
        rows, labels = batches.next(1.0 if step < recipe.copy_warmup_steps else recipe.copy_fraction)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            loss = _shifted_loss(model(input_ids=rows).logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step == recipe.target_steps - 1 or time.monotonic() - t0 > recipe.max_target_s
        if step % 250 == 0 or last:
            history.append({"step": step, "loss": round(loss.item(), 4), "s": round(time.monotonic() - t0, 1)})
            log(f"target step {step} loss {loss.item():.3f} ({time.monotonic() - t0:.0f} s)")
        if last:
            break
    model.eval()
    return history


@torch.no_grad()
def generate(
    model, prompts: list[list[int]], new_tokens: int, sample: bool, seed: int, batch: int = 512
) -> list[list[int]]:
    """Each prompt's continuation (up to and including EOS), batched with left padding."""
    out: list[list[int] | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    torch.manual_seed(seed)
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]) :] = 1
        with torch.autocast(DEV, dtype=torch.bfloat16):
            gen = model.generate(
                input_ids=ids.to(DEV),
                attention_mask=mask.to(DEV),
                max_new_tokens=new_tokens,
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_k=0 if sample else None,
                top_p=1.0 if sample else None,
                pad_token_id=PAD,
                eos_token_id=EOS,
            )
        for r, i in enumerate(idx):
            cont = gen[r, width:].tolist()
            out[i] = cont[: cont.index(EOS) + 1] if EOS in cont else cont
    return out  # type: ignore[return-value]


@torch.no_grad()
def draft_from_target(draft, target, layers: str):
    """The draft starts as the target cut to `layers`: a draft that shares the target's
    embedding, head and early features agrees with it sooner than one learnt from nothing."""
    picked = [int(i) for i in layers.split(",")]
    if len(picked) != len(draft.model.layers) or draft.config.hidden_size != target.config.hidden_size:
        raise SystemExit(
            f"draft_init_layers={layers!r}: needs one target layer per draft layer and the "
            f"target's width ({len(draft.model.layers)} layers of {draft.config.hidden_size} here)"
        )
    state = {k: v for k, v in target.state_dict().items() if not k.startswith("model.layers.")}
    for mine, theirs in enumerate(picked):
        prefix = f"model.layers.{theirs}."
        state.update(
            {
                f"model.layers.{mine}." + k[len(prefix) :]: v
                for k, v in target.state_dict().items()
                if k.startswith(prefix)
            }
        )
    draft.load_state_dict(state, strict=True)
    return draft


def distill_draft(draft, target, batches: Batches, recipe: Recipe, log) -> list[dict]:
    """KL to the target's next-token distribution plus cross-entropy on its argmax (what greedy
    verification accepts), on the rows the target trained on. Not on the target's own
    continuations: 8000 of them (what an H200 generates in 90 s) were memorised within 4000
    steps (0.80 agreement there), and the draft did no better on held-out text than this one,
    which needs no generation (simulated acceptance on held-out chat 0.18 and 0.19, free-form
    code 0.24 and 0.28)."""
    opt = torch.optim.AdamW(
        draft.parameters(), lr=recipe.draft_lr, betas=(0.9, 0.95), weight_decay=0.05, fused=DEV == "cuda"
    )
    history = []
    draft.train()
    t0 = time.monotonic()
    for step in range(recipe.draft_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, recipe.draft_steps, time.monotonic() - t0, recipe.max_draft_s, recipe.draft_lr)
        x, labels = batches.next(recipe.copy_fraction)
        keep = torch.zeros_like(x, dtype=torch.float)
        keep[:, :-1] = (labels[:, 1:] != -100).float()  # positions whose next token counts
        with torch.autocast(DEV, dtype=torch.bfloat16):
            with torch.no_grad():
                t_logits = target(input_ids=x).logits.float()
            s_logits = draft(input_ids=x).logits.float()
        t_logp, s_logp = F.log_softmax(t_logits, -1), F.log_softmax(s_logits, -1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
        hard = F.cross_entropy(s_logits.transpose(1, 2), t_logits.argmax(-1), reduction="none")
        loss = ((kl + hard) * keep).sum() / keep.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
        opt.step()
        last = step == recipe.draft_steps - 1 or time.monotonic() - t0 > recipe.max_draft_s
        if step % 250 == 0 or last:
            agree = ((s_logits.argmax(-1) == t_logits.argmax(-1)).float() * keep).sum() / keep.sum()
            history.append({"step": step, "loss": round(loss.item(), 4), "agreement": round(agree.item(), 4)})
            log(
                f"draft step {step} loss {loss.item():.3f} agreement {agree.item():.3f} ({time.monotonic() - t0:.0f} s)"
            )
        if last:
            break
    draft.eval()
    return history


# --- evaluation -----------------------------------------------------------------------------


def ngram_proposal(tokens: np.ndarray, k: int, n_min: int = 2, n_max: int = 4) -> list[int]:
    """vLLM's prompt lookup: the longest suffix n-gram (n_min..n_max), its earliest occurrence."""
    for n in range(min(n_max, len(tokens) - 1), n_min - 1, -1):
        suffix = tokens[-n:]
        hits = np.ones(len(tokens) - n, dtype=bool)
        for j in range(n):
            hits &= tokens[j : len(tokens) - n + j] == suffix[j]
        if hits.any():
            i = int(np.argmax(hits))
            return tokens[i + n : i + n + k].tolist()
    return []


def simulate(prompt: list[int], cont: list[int], draft_hits: list[bool], k: int) -> dict:
    """Drafts proposed and accepted along the target's greedy continuation, for prompt lookup
    and for a draft whose greedy choice at each position is right where `draft_hits` says."""
    stats = {"ngram": [0, 0, 0], "draft": [0, 0, 0]}  # steps, proposed, accepted
    seq = np.array(prompt + cont)
    for method in stats:
        i = 0
        while i < len(cont):
            if method == "ngram":
                proposal = ngram_proposal(seq[: len(prompt) + i], k)
                accepted = 0
                while (
                    accepted < len(proposal) and i + accepted < len(cont) and proposal[accepted] == cont[i + accepted]
                ):
                    accepted += 1
                proposed = len(proposal)
            else:
                proposed, accepted = k, 0
                while accepted < k and i + accepted < len(cont) and draft_hits[i + accepted]:
                    accepted += 1
            s = stats[method]
            s[0] += 1
            s[1] += proposed
            s[2] += accepted
            i += accepted + 1
    return stats


@torch.no_grad()
def evaluate(target, draft, tok, arrays, recipe: Recipe, log) -> dict:
    """On the evaluation prompts of each kind in the data (`dataset.py`)."""
    report = {}
    kinds = [name.split(".")[1] for name in arrays.files if name.startswith("eval.") and name.endswith(".prompt.flat")]
    for kind in kinds:
        prompts = unragged(arrays, f"eval.{kind}.prompt")
        # Teacher-forced accuracy on the reference answers: copying shows here first.
        answers = unragged(arrays, f"eval.{kind}.answer")
        conts = generate(target, prompts, recipe.eval_new_tokens, sample=False, seed=recipe.seed)
        totals = {"ngram": [0, 0, 0], "draft": [0, 0, 0]}
        ref_hits = ref_total = repeated = generated = 0
        for p, a, c in zip(prompts, answers, conts):
            full = torch.tensor([p + c], device=DEV)
            with torch.autocast(DEV, dtype=torch.bfloat16):
                d_pred = draft(input_ids=full).logits.argmax(-1)[0, len(p) - 1 : -1].tolist()
                ref = torch.tensor([p + a[: recipe.eval_new_tokens]], device=DEV)
                t_pred = target(input_ids=ref).logits.argmax(-1)[0, len(p) - 1 : -1].tolist()
            ref_hits += sum(x == y for x, y in zip(t_pred, a))
            ref_total += len(t_pred)
            stats = simulate(p, c, [x == y for x, y in zip(d_pred, c)], k=4)
            for m in totals:
                totals[m] = [u + v for u, v in zip(totals[m], stats[m])]
            grams = [tuple(c[i : i + 4]) for i in range(len(c) - 3)]
            repeated += len(grams) - len(set(grams))
            generated += len(grams)
        report[kind] = {
            "answer_accuracy_teacher_forced": round(ref_hits / max(1, ref_total), 3),
            "mean_generated_tokens": round(sum(map(len, conts)) / len(conts), 1),
            "repeated_4gram_share": round(repeated / max(1, generated), 3),
            **{f"{m}_acceptance_k4": round(t[2] / t[1], 3) if t[1] else None for m, t in totals.items()},
            **{f"{m}_tokens_per_step_k4": round((t[0] + t[2]) / t[0], 3) if t[0] else None for m, t in totals.items()},
        }
        log(f"eval {kind}: {report[kind]}")
        report[kind]["sample"] = tok.decode(conts[0])[:400]
    return report


# --- main -----------------------------------------------------------------------------------


def _save(model, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()}, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(".gpu/testbed"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override recipe fields, e.g. target_steps=6000 target=6,256,768",
    )
    args = parser.parse_args()
    data_recipe = json.loads((args.data / "recipe.json").read_text())
    recipe = parse_overrides(args.set, Recipe(**data_recipe))
    if clash := [name for name in DATA_FIELDS if getattr(recipe, name) != data_recipe[name]]:
        raise SystemExit(
            f"--set {', '.join(clash)}: a data field; remake the data with "
            f"`python -m cluster.testmodels.dataset --set ...` instead"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.0f}s] {msg}", flush=True)

    from tokenizers import Tokenizer

    torch.manual_seed(recipe.seed)
    tok = Tokenizer.from_file(str(args.data / "tokenizer.json"))
    for text, ids in json.loads((args.data / "tokenizer_check.json").read_text()):
        assert tok.encode(text).ids == ids, "this machine's tokenizers library encodes differently"
    arrays = np.load(args.data / "tokens.npz")
    streams = {name.removeprefix("rows."): Stream(arrays[name]) for name in arrays.files if name.startswith("rows.")}
    markers = [tok.encode(m).ids for m in COPY_MARKERS]
    log("data: " + ", ".join(f"{k} {len(s.rows)} rows" for k, s in streams.items()))

    target = new_model(recipe.target, recipe.vocab_size, recipe.max_positions, recipe.seed)
    if recipe.init_target:
        load_weights(target, recipe.init_target)
    target = target.to(DEV)
    batches = Batches(streams, markers, recipe, recipe.seed)
    target_history = train_target(target, batches, recipe, log)
    _save(target, args.out / "target.safetensors")

    draft = new_model(recipe.draft, recipe.vocab_size, recipe.max_positions, recipe.seed + 1).to(DEV)
    if recipe.draft_init_layers:
        draft_from_target(draft, target, recipe.draft_init_layers)
    draft_history = distill_draft(draft, target, Batches(streams, markers, recipe, recipe.seed + 1), recipe, log)
    _save(draft, args.out / "draft.safetensors")

    evaluation = evaluate(target, draft, tok, arrays, recipe, log)
    report = {
        "recipe": {**asdict(recipe), "target": asdict(recipe.target), "draft": asdict(recipe.draft)},
        "target_history": target_history,
        "draft_history": draft_history,
        "evaluation": evaluation,
        "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
        "torch": torch.__version__,
        "train_s": round(time.monotonic() - t_start, 1),
    }
    if recipe.init_target and (earlier := Path(recipe.init_target).with_name("train_report.json")).exists():
        first = json.loads(earlier.read_text())  # the run that trained the target this one started from
        report["init_target_run"] = {k: first[k] for k in ("recipe", "target_history", "device", "train_s")}
    (args.out / "train_report.json").write_text(json.dumps(report, indent=2))
    log("done")


if __name__ == "__main__":
    main()
