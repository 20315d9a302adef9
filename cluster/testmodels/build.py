"""Build (or reuse from the cache) the served test target and draft from the shipped weights.

    python -m cluster.testmodels.build [--out DIR] [--force]

No training here: the small target and draft were trained once on a GPU
(`cluster.testmodels.train`) and ship in `weights/` with a manifest. The build checks their
hashes, embeds the small target exactly into the served shape (function-preserving
expansion: the function of the trained model at the cost of a bigger one), saves both as
Hugging Face checkpoints sharing one tokenizer, and measures the pair with vLLM on CPU
(`measure.py`). Writes DIR/target, DIR/draft and DIR/report.json. The cache is keyed on the
weights' hashes, the served shape, the code that builds and measures, and the Python version
(whose standard library the measurement prompts come from).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from cluster.testmodels import measure as measure_module
from cluster.testmodels import tasks
from cluster.testmodels.corpus import stdlib
from cluster.testmodels.llama import Shape, expand, load_weights, new_model
from cluster.testmodels.tokenizer import save_tokenizer
from cluster.testmodels.weights import WEIGHTS_DIR, verify

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = PROJECT_ROOT / ".cache" / "testmodels"
# The served target: the trained one embedded into this shape, for the cost of a bigger model.
SERVED_TARGET = Shape(layers=10, hidden=768, intermediate=2048)
# What the build's output depends on, besides the weights (not the training code).
_BUILD_SOURCES = ("build.py", "llama.py", "tokenizer.py", "measure.py", "tasks.py", "corpus.py")


def cache_key(manifest: dict) -> str:
    h = hashlib.sha256(sys.version.encode())
    h.update(json.dumps([manifest["sha256"], SERVED_TARGET.__dict__], sort_keys=True).encode())
    for name in _BUILD_SOURCES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def _progress(step: int, total: int, msg: str) -> None:
    print(f"[{step}/{total}] {msg}", flush=True)


def load_small(manifest: dict, which: str) -> torch.nn.Module:
    recipe = manifest["recipe"]
    model = new_model(Shape(**recipe[which]), recipe["vocab_size"], recipe["max_positions"], seed=0)
    return load_weights(model, WEIGHTS_DIR / f"{which}.safetensors").eval()


def _save(model, tok, out: Path, max_positions: int) -> None:
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tok, out, max_positions)


def build(out: Path, manifest: dict) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(WEIGHTS_DIR / "tokenizer.json"))
    _progress(2, 4, f"expanding the trained target {manifest['recipe']['target']} into {SERVED_TARGET.__dict__}")
    small, draft = load_small(manifest, "target"), load_small(manifest, "draft")
    with torch.no_grad():
        big = expand(small, SERVED_TARGET)
        probe_text = tasks.examples("code_edit", stdlib(held_out=True), 1, seed=0)[0].training_text()
        probe = torch.tensor([tok.encode(probe_text).ids[:256]])
        error = (big(input_ids=probe).logits - small(input_ids=probe).logits).abs().max().item()
    _progress(3, 4, f"saving target and draft to {out} (expansion max logit error {error:.1e})")
    max_positions = manifest["recipe"]["max_positions"]
    _save(big, tok, out / "target", max_positions)
    _save(draft, tok, out / "draft", max_positions)
    return {
        "expansion_max_logit_error": error,
        "served_target": SERVED_TARGET.__dict__,
        "trained_target": manifest["recipe"]["target"],
        "draft": manifest["recipe"]["draft"],
    }


# The engines to measure, as two sequences run side by side, one per core, each about half the
# work: the build takes 140 s instead of 200-260. The speedups it reports compare engines timed
# on two cores at once; `cluster.benchmarks.spec_methods` times them one at a time.
ENGINE_SEQUENCES = (("none", "ngram"), ("draft_model", measure_module.DRAFT_ALONE))


def measure(out: Path) -> dict:
    """vLLM's own counters for the pair, in child processes (vLLM spawns its engine core)."""
    env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    children = []
    try:
        for core, engines in enumerate(ENGINE_SEQUENCES):
            result = out / f"measured-{core}.json"
            children.append(
                (
                    result,
                    subprocess.Popen(
                        [sys.executable, "-m", "cluster.testmodels.measure", str(out), str(result), *engines],
                        env={**env, "VLLM_CPU_OMP_THREADS_BIND": str(core % (os.cpu_count() or 1))},
                    ),
                )
            )
        failed = [r.name for r, child in children if child.wait() != 0]
    finally:
        for _, child in children:
            if child.poll() is None:
                child.terminate()
                child.wait()
    if failed:
        raise RuntimeError(f"measuring the test models failed ({', '.join(failed)}); see the output above")
    return measure_module.merge([part for result, _ in children for part in json.loads(result.read_text())])


def ensure_built(out: Path = DEFAULT_OUT, force: bool = False) -> dict:
    _progress(1, 4, f"checking the shipped weights in {WEIGHTS_DIR}")
    manifest = verify()
    key = cache_key(manifest)
    report_path = out / "report.json"
    if not force and report_path.exists():
        report = json.loads(report_path.read_text())
        if report.get("cache_key") == key:
            _progress(4, 4, f"cached: {out}")
            return report
    out.mkdir(parents=True, exist_ok=True)
    report_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    report = {"cache_key": key, **build(out, manifest)}
    report["timings"] = {"expand_and_save_s": round(time.monotonic() - t0, 1)}
    _progress(4, 4, "measuring the pair with vLLM on CPU (acceptance per kind of request, speed at batch 1)")
    report["measured"] = measure(out)
    report["timings"]["build_total_s"] = round(time.monotonic() - t0, 1)
    report_path.write_text(json.dumps(report, indent=2))
    return report


def summary(report: dict) -> str:
    m = report["measured"]
    lines = [
        f"  cost per token: target {m['target_ms_per_token']:.2f} ms, draft {m['draft_ms_per_token']:.2f} ms"
        f" ({m['cost_ratio']:.1f}x)",
        f"  acceptance at k={m['k']} (greedy; sampled at temperature 1 in brackets):",
    ]
    for kind, row in m["acceptance"].items():
        cells = []
        for method in ("ngram", "draft_model"):
            rate = row[method]["acceptance_rate"]
            sampled = row.get(f"{method}_sampled", {}).get("acceptance_rate")
            cells.append(
                f"{method} {rate if rate is None else round(rate, 2)}"
                + ("" if sampled is None else f" [{sampled:.2f}]")
            )
        lines.append(f"    {kind:22s} " + "  ".join(cells))
    lines.append("  speedup over no speculation at batch 1:")
    for kind, row in m["ms_per_token"].items():
        lines.append(f"    {kind:22s} " + "  ".join(f"{meth} {s:.2f}x" for meth, s in row["speedup"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = ensure_built(args.out, args.force)
    print(f"test models in {args.out} (built in {report['timings'].get('build_total_s', 0)} s)")
    print(summary(report))


if __name__ == "__main__":
    main()
