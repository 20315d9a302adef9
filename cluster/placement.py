"""Placement plan and memory fit for target pools, computed from the config alone.

Per GPU of a TP group: weights (target, plus an in-engine drafter, both sharded over the
group) + runtime overhead + KV cache must fit in memory x gpu_memory_utilization, and the
KV cache left must hold at least one sequence of max_model_len tokens (vLLM refuses to start
otherwise). On CPU, vLLM sizes the KV cache from VLLM_CPU_KVCACHE_SPACE, so only the
placement (one core per TP rank) is planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_app.config.schema import AppConfig, ModelConfig

GIB = 1024**3

# Memory of the GPU types Ray knows by name (GiB).
GPU_MEMORY_GIB = {"H100": 80, "H200": 141, "A100-80G": 80, "A100-40G": 40, "L40S": 48, "L4": 24, "A10G": 24}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class PoolPlacement:
    model: str
    pool: str
    method: str
    kind: str
    accelerator_type: str | None
    tensor_parallel_size: int
    min_replicas: int
    max_replicas: int
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
    def devices_per_replica(self) -> int:
        return self.tensor_parallel_size

    def explain(self) -> str:
        if self.kind == "cpu":
            return f"{self.tensor_parallel_size} CPU core(s) per replica, one per TP rank"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        text = (f"{verdict}: per GPU {self.usable_gib:.1f} GiB usable = weights {self.weights_gib:.1f} + drafter "
                f"{self.drafter_gib:.1f} + overhead {self.overhead_gib:.1f} + KV cache {self.kv_gib:.1f} GiB "
                f"({self.kv_tokens} tokens; max_model_len needs {self.max_model_len})")
        if not self.fits:
            text += ("; raise tensor_parallel_size, lower max_model_len, raise gpu_memory_utilization "
                     "or use GPUs with more memory")
        return text


def plan_model(model: "ModelConfig") -> list[PoolPlacement]:
    tp = model.tensor_parallel_size
    acc = model.accelerator
    plans = []
    for pool in model.pools:
        base = dict(model=model.id, pool=pool.name, method=pool.speculation.method, kind=acc.kind,
                    accelerator_type=acc.type, tensor_parallel_size=tp,
                    min_replicas=pool.autoscaling.min_replicas, max_replicas=pool.autoscaling.max_replicas)
        if acc.kind == "cpu":
            plans.append(PoolPlacement(**base))
            continue
        dtype_bytes = DTYPE_BYTES[model.dtype]
        target = model.target().shape("source")
        weights = target.param_count() * dtype_bytes / tp
        kv_per_token = target.kv_bytes_per_token(dtype_bytes, tp)
        drafter = 0.0
        draft = pool.speculation.draft
        if draft is not None:
            # vLLM runs in-engine drafters on the target's own GPUs at the target's TP degree.
            shape = draft.shape(f"pools.{pool.name}.speculation.draft")
            drafter = shape.param_count() * dtype_bytes / tp
            kv_per_token += shape.kv_bytes_per_token(dtype_bytes, tp)
        usable = acc.memory_gib * GIB * model.gpu_memory_utilization
        kv = usable - weights - drafter - model.runtime_overhead_gib * GIB
        plans.append(PoolPlacement(
            **base, usable_gib=usable / GIB, weights_gib=weights / GIB, drafter_gib=drafter / GIB,
            overhead_gib=model.runtime_overhead_gib, kv_gib=max(kv, 0) / GIB,
            kv_tokens=int(max(kv, 0) // kv_per_token), max_model_len=model.max_model_len))
    return plans


def plan_app(app: "AppConfig") -> list[PoolPlacement]:
    return [p for m in app.models for p in plan_model(m)]


def render(plans: list[PoolPlacement]) -> str:
    lines = []
    totals: dict[str, list[int]] = {}
    for p in plans:
        device = "CPU core" if p.kind == "cpu" else f"GPU {p.accelerator_type or ''}".strip()
        lines.append(f"{p.model} / pool {p.pool} (speculation: {p.method})")
        lines.append(f"  replicas {p.min_replicas}..{p.max_replicas}, TP {p.tensor_parallel_size}: "
                     f"{p.devices_per_replica} x {device} per replica")
        lines.append(f"  {p.explain()}")
        lo_hi = totals.setdefault(device, [0, 0])
        lo_hi[0] += p.min_replicas * p.devices_per_replica
        lo_hi[1] += p.max_replicas * p.devices_per_replica
    for device, (lo, hi) in totals.items():
        lines.append(f"total {device}: {lo} at min replicas, {hi} at max replicas")
    return "\n".join(lines)
