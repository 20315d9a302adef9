"""GPU kinds the planner scales the measured H200 costs to, from their published datasheets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuKind:
    memory_bytes_per_s: float
    bf16_flops: float  # dense tensor-core peak
    # Per all-reduce of a TP group: latency and bus bandwidth (NVLink kinds only; None: PCIe,
    # where the planner refuses TP > 1 rather than guess).
    allreduce_latency_s: float | None = None
    allreduce_bus_bytes_per_s: float | None = None


# Datasheets: H200 4.8 TB/s, 989 TFLOP/s; H100 SXM 3.35 TB/s, 989; A100 80 GB 2.04 TB/s, 312;
# A100 40 GB 1.555 TB/s, 312; L40S 864 GB/s, 362; L4 300 GB/s, 121; A10G 600 GB/s, 125 (A10's
# figure; AWS does not publish the A10G's). All-reduce on NVLink: vLLM's custom all-reduce of a
# 32 KB message at TP=4 takes about 5-9 us (7 us here); large messages at about 360 GB/s of bus
# bandwidth (NVLink 4 is 450 GB/s per direction; NCCL reaches about 80% of it). Not measured
# here (one GPU): the multi-GPU calibration issue measures both.
_NVLINK = dict(allreduce_latency_s=7e-6, allreduce_bus_bytes_per_s=360e9)
GPU_KINDS: dict[str, GpuKind] = {
    "H200": GpuKind(4.8e12, 989e12, **_NVLINK),
    "H100": GpuKind(3.35e12, 989e12, **_NVLINK),
    "A100-80G": GpuKind(2.04e12, 312e12, allreduce_latency_s=9e-6, allreduce_bus_bytes_per_s=240e9),
    "A100-40G": GpuKind(1.555e12, 312e12, allreduce_latency_s=9e-6, allreduce_bus_bytes_per_s=240e9),
    "L40S": GpuKind(0.864e12, 362e12),
    "L4": GpuKind(0.3e12, 121e12),
    "A10G": GpuKind(0.6e12, 125e12),
}
MEASURED_ON = "H200"
