"""Placement plan and memory fit for target pools and draft workers, from the config alone.

Per GPU of a TP group: weights (target, plus an in-engine drafter, both sharded over the
group) + runtime overhead + KV cache must fit in memory x gpu_memory_utilization, and the
KV cache left must hold at least one sequence of max_model_len tokens (vLLM refuses to start
otherwise). A draft worker is planned the same way on its own GPU share (TP 1). On CPU, vLLM
sizes the KV cache from VLLM_CPU_KVCACHE_SPACE, so only the placement (one core per TP rank)
is planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_app.config.architecture import Architecture
    from serve_app.config.schema import AcceleratorConfig, AppConfig, DraftWorkerConfig, ModelConfig

GIB = 1024**3

# Memory of the GPU types Ray knows by name (GiB).
GPU_MEMORY_GIB = {"H100": 80, "H200": 141, "A100-80G": 80, "A100-40G": 40, "L40S": 48, "L4": 24, "A10G": 24}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Placement:
    """One deployment's replicas: a target pool, or a draft worker (`role`)."""

    role: str
    model: str
    name: str
    method: str
    kind: str
    accelerator_type: str | None
    tensor_parallel_size: int
    min_replicas: int
    max_replicas: int
    gpu_fraction: float = 1.0
    usable_gib: float = 0.0
    weights_gib: float = 0.0
    drafter_gib: float = 0.0
    overhead_gib: float = 0.0
    kv_gib: float = 0.0
    kv_tokens: int = 0
    max_model_len: int = 0

    @property
    def fits(self) -> bool:
        return self.kind == "cpu" or self.kv_tokens >= self.max_model_len

    @property
    def devices_per_replica(self) -> float:
        return self.tensor_parallel_size * self.gpu_fraction

    def explain(self) -> str:
        if self.kind == "cpu":
            return f"{self.tensor_parallel_size} CPU core(s) per replica, one per TP rank"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        share = "GPU" if self.gpu_fraction == 1 else f"{self.gpu_fraction:g} GPU"
        text = (
            f"{verdict}: per {share} {self.usable_gib:.1f} GiB usable = weights {self.weights_gib:.1f} + drafter "
            f"{self.drafter_gib:.1f} + overhead {self.overhead_gib:.1f} + KV cache {self.kv_gib:.1f} GiB "
            f"({self.kv_tokens} tokens; max_model_len needs {self.max_model_len})"
        )
        if not self.fits:
            text += (
                "; raise tensor_parallel_size, lower max_model_len, raise gpu_memory_utilization "
                "or use GPUs with more memory"
            )
        return text


def _memory_fit(
    acc: AcceleratorConfig,
    utilization: float,
    overhead_gib: float,
    tp: int,
    dtype_bytes: int,
    max_model_len: int,
    models: list[Architecture],
    drafter_tp: int | None = None,
) -> dict:
    """Per-GPU memory of `models` (a target and its in-engine drafter, or a draft alone) sharded
    over TP; a drafter at a TP of its own (vLLM's draft_tensor_parallel_size, 1 or the target's)
    is whole on a GPU at 1."""
    degrees = [tp] + [drafter_tp or tp] * (len(models) - 1)
    weights = [m.param_count() * dtype_bytes / d for m, d in zip(models, degrees)]
    kv_per_token = sum(m.kv_bytes_per_token(dtype_bytes, d) for m, d in zip(models, degrees))
    usable = acc.memory_gib * GIB * utilization
    kv = max(usable - sum(weights) - overhead_gib * GIB, 0)
    return dict(
        usable_gib=usable / GIB,
        weights_gib=weights[0] / GIB,
        drafter_gib=sum(weights[1:]) / GIB,
        overhead_gib=overhead_gib,
        kv_gib=kv / GIB,
        kv_tokens=int(kv // kv_per_token),
        max_model_len=max_model_len,
    )


def plan_model(model: ModelConfig) -> list[Placement]:
    tp = model.tensor_parallel_size
    acc = model.accelerator
    plans = []
    for pool in model.pools:
        base = dict(
            role="pool",
            model=model.id,
            name=pool.name,
            method=pool.speculation.method,
            kind=acc.kind,
            accelerator_type=acc.type,
            tensor_parallel_size=tp,
            min_replicas=pool.autoscaling.min_replicas,
            max_replicas=pool.autoscaling.max_replicas,
        )
        if acc.kind == "cpu":
            plans.append(Placement(**base))
            continue
        shapes = [model.target().shape("source")]
        if pool.speculation.draft is not None:
            # vLLM runs in-engine drafters on the target's own GPUs at the target's TP degree.
            shapes.append(pool.speculation.draft.shape(f"pools.{pool.name}.speculation.draft"))
        plans.append(
            Placement(
                **base,
                **_memory_fit(
                    acc,
                    model.gpu_memory_utilization,
                    model.runtime_overhead_gib,
                    tp,
                    DTYPE_BYTES[model.dtype],
                    model.max_model_len,
                    shapes,
                    pool.speculation.options.get("draft_tensor_parallel_size"),
                ),
            )
        )
    for worker in model.draft_workers:
        acc = worker.accelerator
        base = dict(
            role="draft worker",
            model=model.id,
            name=worker.name,
            method="remote_draft",
            kind=acc.kind,
            accelerator_type=acc.type,
            tensor_parallel_size=1,
            gpu_fraction=worker.gpu_fraction,
            min_replicas=worker.autoscaling.min_replicas,
            max_replicas=worker.autoscaling.max_replicas,
        )
        if acc.kind == "cpu":
            plans.append(Placement(**base))
            continue
        plans.append(
            Placement(
                **base,
                **_memory_fit(
                    acc,
                    worker.gpu_memory_utilization,
                    worker.runtime_overhead_gib,
                    1,
                    DTYPE_BYTES[worker.dtype or model.dtype],
                    model.draft_max_model_len(worker),
                    [worker.shape(f"draft_workers.{worker.name}")],
                ),
            )
        )
    return plans


def memory_moved_off_target(model: ModelConfig, worker: DraftWorkerConfig) -> dict:
    """What the same draft would take on each target rank if it ran in-engine (as vLLM's
    draft_model does): its weights, and its share of every cached token's KV bytes."""
    tp, dtype_bytes = model.tensor_parallel_size, DTYPE_BYTES[worker.dtype or model.dtype]
    target, draft = model.target().shape("source"), worker.shape(f"draft_workers.{worker.name}")
    target_kv = target.kv_bytes_per_token(DTYPE_BYTES[model.dtype], tp)
    draft_kv = draft.kv_bytes_per_token(dtype_bytes, tp)
    return {
        "model": model.id,
        "draft_worker": worker.name,
        "tensor_parallel_size": tp,
        "draft_weights_mib_per_rank": draft.param_count() * dtype_bytes / tp / 2**20,
        "kv_bytes_per_token_target": target_kv,
        "kv_bytes_per_token_draft": draft_kv,
        # The same KV memory holds this many more tokens without the drafter's KV.
        "kv_capacity_gain": draft_kv / target_kv,
    }


def plan_app(app: AppConfig) -> list[Placement]:
    return [p for m in app.models for p in plan_model(m)]


def render(plans: list[Placement]) -> str:
    lines = []
    totals: dict[str, list[float]] = {}
    for p in plans:
        device = "CPU core" if p.kind == "cpu" else f"GPU {p.accelerator_type or ''}".strip()
        share = f"{p.devices_per_replica:g} x {device}"
        lines.append(f"{p.model} / {p.role} {p.name} (speculation: {p.method})")
        lines.append(f"  replicas {p.min_replicas}..{p.max_replicas}, TP {p.tensor_parallel_size}: {share} per replica")
        lines.append(f"  {p.explain()}")
        lo_hi = totals.setdefault(device, [0, 0])
        lo_hi[0] += p.min_replicas * p.devices_per_replica
        lo_hi[1] += p.max_replicas * p.devices_per_replica
    for device, (lo, hi) in totals.items():
        lines.append(f"total {device}: {lo:g} at min replicas, {hi:g} at max replicas")
    return "\n".join(lines)
