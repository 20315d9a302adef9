"""Measure one engine step of Llama-shaped models on this GPU, by batch size and tokens per row.

    python -m cluster.calibration.gpu_steps --out cluster/calibration/h200.json   # on a CUDA machine, ~30 s

Torch only (vLLM does not run on the lent GPU). For each shape and tensor-parallel degree it
times, with CUDA graphs and bf16, one tensor-parallel rank's share of a decoder layer at a KV
context of 2048: the whole layer, its matrix products alone and its attention alone, plus the
output head; a step is `layers * layer + head`. Attention also at contexts 512 and 8192, so
the planner can follow context length. All-reduce is left out (one GPU); the planner adds it.

Attention runs torch's flash kernel with each KV head's query heads packed into the query
rows (what vLLM's FlashAttention decode path does for grouped-query attention); the causal
mask over the last `tokens` of the context is left out, which changes the work by tokens/context.
Rotary embeddings and the KV-cache write are left out, and the residual adds and the SiLU gate
are separate kernels where vLLM fuses them (elementwise, a few percent at batch 1).
Several copies of the layer's weights and KV cache are cycled so each replay reads them from
memory, not from the 60 MB L2.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BATCHES = (1, 4, 16, 64, 128)
# 1 + k for k = 0..8, and token trees as wide as SGLang's EAGLE-3 settings verify (up to 64 drafts).
TOKENS = (1, 2, 3, 4, 5, 7, 9, 17, 33, 65)
CONTEXT = 2048
ATTENTION_CONTEXTS = (512, 2048, 8192)
WEIGHT_BYTES_PER_REPLAY = 400e6  # cycle copies until a replay reads this much: well past L2


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


# Published configs (config.json of each Hugging Face repo).
SHAPES = {
    "llama-3-70b": ModelShape(80, 8192, 64, 8, 128, 28672, 128256),
    "llama-3-8b": ModelShape(32, 4096, 32, 8, 128, 14336, 128256),
    "llama-3.2-1b": ModelShape(16, 2048, 32, 8, 64, 8192, 128256),
    # EAGLE-3 head for Llama-3.3-70B: one decoder layer of the target's width, a 32000-token
    # draft vocabulary (yuhuili/EAGLE3-LLaMA3.3-Instruct-70B); its 3-to-1 feature fusion is a
    # small extra product left out here.
    "eagle3-llama-3.3-70b": ModelShape(1, 8192, 64, 8, 128, 28672, 32000),
}
# (shape, tensor-parallel degree) pairs measured: the 70B target at TP 4 and 8, an 8B target
# or draft at TP 1, the 1B draft alone (its own GPU) and sharded like an in-engine draft at TP 4.
RUNS = (
    ("llama-3-70b", 4),
    ("llama-3-70b", 8),
    ("llama-3-8b", 1),
    ("llama-3.2-1b", 1),
    ("llama-3.2-1b", 4),
    ("eagle3-llama-3.3-70b", 4),
)


@dataclass(frozen=True)
class Shard:
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, s: ModelShape, tp: int) -> Shard:
        return cls(
            s.hidden, s.heads // tp, max(1, s.kv_heads // tp), s.head_dim, s.intermediate // tp, math.ceil(s.vocab / tp)
        )

    def layer_bytes(self) -> int:
        d = self.head_dim
        return 2 * self.hidden * ((self.q_heads + 2 * self.kv_heads) * d + self.q_heads * d + 3 * self.intermediate)


def _weights(s: Shard, dev) -> dict[str, torch.Tensor]:
    d = s.head_dim
    w = lambda *shape: torch.randn(*shape, device=dev, dtype=torch.bfloat16) * 0.02  # noqa: E731
    return {
        "n1": torch.ones(s.hidden, device=dev, dtype=torch.bfloat16),
        "n2": torch.ones(s.hidden, device=dev, dtype=torch.bfloat16),
        "qkv": w(s.hidden, (s.q_heads + 2 * s.kv_heads) * d),
        "o": w(s.q_heads * d, s.hidden),
        "gu": w(s.hidden, 2 * s.intermediate),
        "down": w(s.intermediate, s.hidden),
    }


def _kv(s: Shard, batch: int, context: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (batch, s.kv_heads, context, s.head_dim)
    return (torch.randn(shape, device=dev, dtype=torch.bfloat16), torch.randn(shape, device=dev, dtype=torch.bfloat16))


def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # One fused kernel, as vLLM's RMSNorm is; a hand-written norm is eight kernels per call.
    return F.rms_norm(x, (x.shape[-1],), w, 1e-5)


def _attention(q: torch.Tensor, kv, s: Shard, batch: int, tokens: int) -> torch.Tensor:
    """q: [batch*tokens, q_heads*d] -> the same shape, attending over the cache `kv`."""
    g, d = s.q_heads // s.kv_heads, s.head_dim
    q = q.view(batch, tokens, s.kv_heads, g, d).permute(0, 2, 3, 1, 4).reshape(batch, s.kv_heads, g * tokens, d)
    a = F.scaled_dot_product_attention(q, kv[0], kv[1])
    return a.view(batch, s.kv_heads, g, tokens, d).permute(0, 3, 1, 2, 4).reshape(batch * tokens, s.q_heads * d)


def _layer(x, w, kv, s: Shard, batch: int, tokens: int, part: str) -> torch.Tensor:
    d = s.head_dim
    if part == "attention":
        return _attention(x, kv, s, batch, tokens)
    h = _rms(x, w["n1"]) if part == "layer" else x
    qkv = h @ w["qkv"]
    q = qkv[:, : s.q_heads * d]
    a = _attention(q, kv, s, batch, tokens) if part == "layer" else q
    x = x + a @ w["o"]
    h = _rms(x, w["n2"]) if part == "layer" else x
    gu = h @ w["gu"]
    return x + (F.silu(gu[:, : s.intermediate]) * gu[:, s.intermediate :]) @ w["down"]


def _time(fn, copies: int) -> float:
    """Median ms of one call of `fn` (which makes `copies` calls' worth of work) over graph replays."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return statistics.median(times) / copies


def measure_run(name: str, tp: int, dev, log) -> dict:
    shape = SHAPES[name]
    s = Shard.of(shape, tp)
    copies = max(2, min(8, math.ceil(WEIGHT_BYTES_PER_REPLAY / s.layer_bytes())))
    weights = [_weights(s, dev) for _ in range(copies)]
    head = torch.randn(s.hidden, s.vocab, device=dev, dtype=torch.bfloat16) * 0.02
    points, attention = [], []
    for batch in BATCHES:
        caches = {c: [_kv(s, batch, c, dev) for _ in range(copies if c == CONTEXT else 2)] for c in ATTENTION_CONTEXTS}
        for tokens in TOKENS:
            m = batch * tokens
            x = torch.randn(m, s.hidden, device=dev, dtype=torch.bfloat16)
            q = torch.randn(m, s.q_heads * s.head_dim, device=dev, dtype=torch.bfloat16)
            row = {"batch": batch, "tokens": tokens}
            for part in ("layer", "matmul"):
                kvs = caches[CONTEXT]
                row[f"{part}_ms"] = _time(
                    lambda: [_layer(x, weights[i], kvs[i], s, batch, tokens, part) for i in range(copies)], copies
                )
            for c in ATTENTION_CONTEXTS:
                kvs = caches[c]
                ms = _time(lambda: [_attention(q, kvs[i], s, batch, tokens) for i in range(len(kvs))], len(kvs))
                attention.append({"batch": batch, "tokens": tokens, "context": c, "ms": ms})
                if c == CONTEXT:
                    row["attention_ms"] = ms
            row["head_ms"] = _time(lambda: _rms(x, weights[0]["n1"]) @ head, 1)
            row["step_ms"] = shape.layers * row["layer_ms"] + row["head_ms"]
            points.append(row)
        log(
            f"{name} TP={tp} batch {batch}: step "
            + ", ".join(f"{p['tokens']} tok {p['step_ms']:.2f} ms" for p in points if p["batch"] == batch)
        )
        del caches
    return {
        "model": name,
        "tp": tp,
        "shape": asdict(shape),
        "shard": asdict(s),
        "context": CONTEXT,
        "points": points,
        "attention_by_context": attention,
    }


def full_step_check(dev, log) -> list[dict]:
    """The 70B TP=4 step as 80 distinct layers in one graph, against `layers * layer + head`."""
    s = Shard.of(SHAPES["llama-3-70b"], 4)
    weights = [_weights(s, dev) for _ in range(80)]
    head = torch.randn(s.hidden, s.vocab, device=dev, dtype=torch.bfloat16) * 0.02
    out = []
    for batch, tokens in ((1, 1), (1, 5), (64, 1), (64, 5)):
        kvs = [_kv(s, batch, CONTEXT, dev) for _ in range(80)]
        x0 = torch.randn(batch * tokens, s.hidden, device=dev, dtype=torch.bfloat16)

        def step():
            x = x0
            for i in range(80):
                x = _layer(x, weights[i], kvs[i], s, batch, tokens, "layer")
            return _rms(x, weights[0]["n1"]) @ head

        out.append({"batch": batch, "tokens": tokens, "step_ms": _time(step, 1)})
        log(f"full 70B TP=4 step, batch {batch}, {tokens} tok: {out[-1]['step_ms']:.2f} ms")
        kvs.clear()  # free this batch's caches before the next one's are made
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:5.0f}s] {msg}", flush=True)

    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "context": CONTEXT,
        "method": __doc__.split("\n\n", 2)[2].strip(),
        "runs": [],
    }
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # an error, not a silent fallback, if flash cannot run
        for name, tp in RUNS:
            result["runs"].append(measure_run(name, tp, dev, log))
            torch.cuda.empty_cache()
            args.out.write_text(json.dumps(result, indent=1))  # partial results survive a cut-off run
        result["full_step_check"] = full_step_check(dev, log)
    result["seconds"] = round(time.monotonic() - t0, 1)
    args.out.write_text(json.dumps(result, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
