"""Seconds of one engine step of a model shard on a GPU kind, from the measured H200 table.

The table (`cluster/calibration/h200.json`, made by `cluster.calibration.gpu_steps`) holds one
TP rank's decoder layer (whole, its matrix products alone, its attention alone) and the output
head, by batch size and tokens per row. Here a step is `layers x (layer + 2 all-reduces) + head`,
interpolated over the table's grid (linear, extrapolated from the last two points beyond it).

Other GPU kinds: each part's time is a fixed latency, which stays (kernel launches and the
latency of small kernels: the time the part would take with nothing to read, fitted across the
measured shapes at batch 1), plus the rest, scaled by the roofline ratio of the two kinds,
max(bytes / memory bandwidth, flops / peak) there over the same here, with that part's bytes
and flops at that load: matrix products and the head read their weights and do 2 flops per
weight per row; attention reads the KV cache and does 4 flops per cached token per query head
dimension; the rest of the layer (norms, activation, residual) is scaled by bandwidth. Scaling
all of a batch-1 step by bandwidth would make a 70B TP=8 step on an H100 17 ms; SGLang measured
11.3. All-reduce is modelled, not measured (`gpus.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cluster.planner.gpus import GPU_KINDS, MEASURED_ON, GpuKind
from serve_app.config.architecture import Architecture

TABLE = Path(__file__).resolve().parents[1] / "calibration" / "h200.json"
BF16 = 2


def _interp(xs: np.ndarray, ys: np.ndarray, x: float) -> float:
    """Linear through the points, extended along the last segment beyond either end."""
    if len(xs) == 1:
        return float(ys[0])
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    return float(ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i]))


def grid_value(points: list[dict], key: str, batch: float, tokens: float) -> float:
    """`key` at (batch, tokens), interpolated over tokens within each measured batch, then over batch."""
    batches = sorted({p["batch"] for p in points})
    at_batch = []
    for b in batches:
        row = sorted((p["tokens"], p[key]) for p in points if p["batch"] == b)
        at_batch.append(_interp(np.array([t for t, _ in row], float), np.array([v for _, v in row]), tokens))
    return max(0.0, _interp(np.array(batches, float), np.array(at_batch), batch))


def _roofline(bytes_: float, flops: float, kind: GpuKind) -> float:
    return max(bytes_ / kind.memory_bytes_per_s, flops / kind.bf16_flops)


@dataclass(frozen=True)
class Shard:
    """One TP rank's share of a model (KV heads are replicated when there are fewer than ranks)."""

    arch: Architecture
    tp: int

    @property
    def q_heads(self) -> float:
        return self.arch.num_attention_heads / self.tp

    @property
    def kv_heads(self) -> float:
        return max(1.0, self.arch.num_kv_heads / self.tp)

    @property
    def layer_params(self) -> float:
        a, d = self.arch, self.arch.head_dim
        return a.hidden_size * ((self.q_heads * 2 + self.kv_heads * 2) * d + 3 * a.intermediate_size / self.tp)

    @property
    def head_params(self) -> float:
        return self.arch.hidden_size * self.arch.output_vocab() / self.tp


class CalibrationTable:
    def __init__(self, path: Path = TABLE):
        self.path = path

    @cached_property
    def data(self) -> dict:
        if not self.path.exists():
            raise FileNotFoundError(
                f"{self.path}: no calibration table; make one on a GPU with "
                f"`python -m cluster.calibration.gpu_steps --out {self.path}`"
            )
        return json.loads(self.path.read_text())

    @property
    def runs(self) -> list[dict]:
        return self.data["runs"]

    def run_for(self, arch: Architecture, tp: int) -> dict | None:
        """The measured run of this shape (layers, widths and heads; the vocabulary is scaled) at this TP."""
        for run in self.runs:
            s = run["shape"]
            if run["tp"] == tp and (
                s["layers"],
                s["hidden"],
                s["heads"],
                s["kv_heads"],
                s["head_dim"],
                s["intermediate"],
            ) == (
                arch.num_layers,
                arch.hidden_size,
                arch.num_attention_heads,
                arch.num_kv_heads,
                arch.head_dim,
                arch.intermediate_size,
            ):
                return run
        return None

    def measured(self) -> list[str]:
        return [f"{r['model']} TP={r['tp']}" for r in self.runs]

    @cached_property
    def fixed_ms(self) -> dict[str, float]:
        """Per-layer matmul and per-step head time at no bytes: the intercepts of time against
        weight bytes across the measured shapes, at batch 1 and one token."""
        firsts = [(_shard(r), _point(r, 1, 1)) for r in self.runs]
        return {
            "matmul": _intercept([s.layer_params * BF16 for s, _ in firsts], [p["matmul_ms"] for _, p in firsts]),
            "head": _intercept([s.head_params * BF16 for s, _ in firsts], [p["head_ms"] for _, p in firsts]),
        }


def _point(run: dict, batch: int, tokens: int) -> dict:
    return next(p for p in run["points"] if p["batch"] == batch and p["tokens"] == tokens)


def _shard(run: dict) -> Shard:
    s = run["shape"]
    arch = Architecture(
        num_layers=s["layers"],
        hidden_size=s["hidden"],
        num_attention_heads=s["heads"],
        num_kv_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        intermediate_size=s["intermediate"],
        vocab_size=s["vocab"],
    )
    return Shard(arch, run["tp"])


def _intercept(xs: list[float], ys: list[float]) -> float:
    """Where the least-squares line through the points meets x = 0 (0 without two x values)."""
    if len(set(xs)) < 2:
        return 0.0
    slope, intercept = np.polyfit(np.array(xs, float), np.array(ys, float), 1)
    return max(0.0, float(intercept))


@dataclass(frozen=True)
class StepModel:
    """Step seconds of `arch` at TP `tp` on `gpu`, from the table's run of the same shape."""

    arch: Architecture
    tp: int
    gpu: str
    run: dict
    fixed_ms: dict

    @classmethod
    def of(cls, table: CalibrationTable, arch: Architecture, tp: int, gpu: str) -> StepModel:
        if gpu not in GPU_KINDS:
            raise ValueError(f"GPU kind {gpu!r} has no published figures here; known: {', '.join(GPU_KINDS)}")
        if tp > 1 and GPU_KINDS[gpu].allreduce_latency_s is None:
            raise ValueError(f"{gpu}: TP={tp} over PCIe is not modelled; use TP=1 or an NVLink GPU kind")
        run = table.run_for(arch, tp)
        if run is None:
            raise ValueError(
                f"no calibration run for a {arch.num_layers}-layer, {arch.hidden_size}-wide model at "
                f"TP={tp}; measured: {', '.join(table.measured())}"
            )
        first = _point(run, 1, 1)
        contexts = sorted({p["context"] for p in run["attention_by_context"]})
        attention = [
            next(p["ms"] for p in run["attention_by_context"] if (p["batch"], p["tokens"], p["context"]) == (1, 1, c))
            for c in contexts
        ]
        fixed = {
            **table.fixed_ms,
            "attention": _intercept(contexts, attention),
            "rest": max(0.0, first["layer_ms"] - first["matmul_ms"] - first["attention_ms"]),
        }
        return cls(arch, tp, gpu, run, fixed)

    def _scaled(self, part: str, ms: float, bytes_: float, flops: float) -> float:
        """`ms` measured here for a part that reads `bytes_` and does `flops`, on this GPU kind."""
        fixed = min(ms, self.fixed_ms[part])
        there = _roofline(bytes_, flops, GPU_KINDS[self.gpu]) if bytes_ or flops else 0.0
        here = _roofline(bytes_, flops, GPU_KINDS[MEASURED_ON]) if bytes_ or flops else 1.0
        return fixed + (ms - fixed) * there / here

    def _allreduce_s(self, rows: float) -> float:
        if self.tp == 1:
            return 0.0
        kind = GPU_KINDS[self.gpu]
        return (
            kind.allreduce_latency_s
            + rows * self.arch.hidden_size * BF16 * 2 * (self.tp - 1) / self.tp / kind.allreduce_bus_bytes_per_s
        )

    def parts_s(self, batch: float, tokens: float, context: float | None = None) -> dict[str, float]:
        """Seconds of the step's parts: matmul, attention, rest (per layer, all layers), head, allreduce."""
        points, shard, a = self.run["points"], Shard(self.arch, self.tp), self.arch
        rows = batch * tokens
        ms = {k: grid_value(points, f"{k}_ms", batch, tokens) for k in ("layer", "matmul", "attention", "head")}
        rest = max(0.0, ms["layer"] - ms["matmul"] - ms["attention"])  # at the measured context
        context = context or self.run_context
        if context != self.run_context:  # linear in the context between the measured ones, at this load
            by_context = self.run["attention_by_context"]
            contexts = sorted({p["context"] for p in by_context})
            values = [grid_value([p for p in by_context if p["context"] == c], "ms", batch, tokens) for c in contexts]
            ms["attention"] = max(0.0, _interp(np.array(contexts, float), np.array(values), context))
        kv_bytes = batch * context * shard.kv_heads * a.head_dim * 2 * BF16
        attn_flops = 4 * rows * shard.q_heads * context * a.head_dim
        activations = rows * a.hidden_size * BF16 * 8  # the norms' and residuals' reads and writes
        head_ms = ms["head"] * a.output_vocab() / self.run["shape"]["vocab"]
        return {
            "matmul": a.num_layers
            * self._scaled("matmul", ms["matmul"], shard.layer_params * BF16, 2 * rows * shard.layer_params)
            / 1e3,
            "attention": a.num_layers * self._scaled("attention", ms["attention"], kv_bytes, attn_flops) / 1e3,
            "rest": a.num_layers * self._scaled("rest", rest, activations, 0.0) / 1e3,
            "head": self._scaled("head", head_ms, shard.head_params * BF16, 2 * rows * shard.head_params) / 1e3,
            "allreduce": a.num_layers * 2 * self._allreduce_s(rows),
        }

    @property
    def run_context(self) -> int:
        return self.run.get("context", 2048)

    def seconds(self, batch: float, tokens: float, context: float | None = None) -> float:
        return sum(self.parts_s(batch, tokens, context).values())
