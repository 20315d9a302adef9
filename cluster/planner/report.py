"""The planner's projections as text: a table per (pool, class, method), a summary, warnings."""

from __future__ import annotations

from cluster.planner.projection import Projection, project_model
from cluster.planner.step_costs import CalibrationTable
from serve_app.config.schema import ModelConfig


def render_projection(p: Projection) -> str:
    lines = [
        f"### pool {p.pool}, class {p.request_class}, {p.method} (alpha {p.alpha:.2f}, k up to {p.k_max})",
        "",
        "| batch | k | tok/s per request | tok/s per replica | speedup over k=0 |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.batch} | {r.k} | {r.request_tokens_per_s:.1f} | {r.replica_tokens_per_s:.0f} | {r.speedup:.2f}x |"
        for r in p.rows
    ]
    return "\n".join(lines)


def summary_lines(projections: list[Projection], warnings: list[str]) -> list[str]:
    """One line per (class, method): speedup and k at batch 1, and the load where it stops paying."""
    lines = []
    for p in projections:
        first = p.rows[0]
        stop = p.stops_paying_at
        lines.append(
            f"  {p.request_class:10s} {p.method:13s} on {p.pool:8s}: {first.speedup:.2f}x at batch 1 "
            f"(k={first.k}), "
            + (
                f"stops paying at batch {stop}"
                if stop
                else f"still pays at batch {p.rows[-1].batch} (k={p.rows[-1].k})"
            )
        )
    return lines + [f"  WARNING: {w}" for w in warnings]


def render_model(model: ModelConfig, table: CalibrationTable, alphas: dict, context: int) -> str:
    if model.accelerator.kind != "gpu":
        return "CPU model: its pools are measured live by the spec tuner, not projected.\n"
    projections, warnings = project_model(model, table, alphas, context)
    parts = ["\n".join(summary_lines(projections, warnings)), *map(render_projection, projections)]
    return "\n\n".join(parts) + "\n"
