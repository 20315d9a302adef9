"""Per pool, request class and method of a config: tokens per second by load, and the best k.

A verify step with k drafts costs the target's step over `1 + k` tokens per row plus the drafting:
- ngram: nothing on the GPU (prompt lookup runs on the CPU while the step's inputs are prepared);
- an in-engine drafter (draft_model, eagle, eagle3): k steps of the drafter, on the target's GPUs
  at the target's TP degree, one token per row;
- a remote draft worker: a call's round trip plus k steps of the draft on its own GPU kind at
  TP 1, run in series with the target (the routed proposer waits for it); a worker on a share f
  of a GPU runs at f of its speed when its neighbours are busy, which is what the planner assumes.
A pool whose proposer is a `custom_class` (the routed pool) runs without vLLM's async scheduling,
so its CPU time per step is no longer hidden under the GPU's work: the planner adds it.
On a routed pool k at each load is the one with the most tokens per second of one request, by
the spec tuner's own `choose_k` over [0, k_max] (k = 0 is plain decoding on the same engine); an
in-engine drafter runs the k its engine started with, at every load.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.planner import acceptance
from cluster.planner.step_costs import CalibrationTable, StepModel
from serve_app.config.schema import ModelConfig, PoolConfig
from serve_app.proposer.request_spec import REMOTE_DRAFT
from serve_app.tuner.goodput import choose_k

# A Ray Serve handle call to a draft worker and back within one cluster (assumed: no figure here
# was measured on GPUs; on this project's CPU runs it is dominated by the draft itself).
REMOTE_CALL_S = 1.0e-3
# CPU time of one engine step (scheduling, input preparation, sampling bookkeeping) that async
# scheduling overlaps with the GPU's work: SGLang's overlap scheduler gained about 10% throughput
# on Llama-3.1-8B (sglang PR 1738); vLLM's full overlap 5-10% more (vllm PR 23569). 10% of an 8B
# H100 step is about 0.6 ms, added to every step of an engine without async scheduling.
SYNC_CPU_S = 0.6e-3
IN_ENGINE_DRAFTERS = ("draft_model", "eagle", "eagle3", "medusa", "mlp_speculator", "mtp")


def load_points(max_num_seqs: int) -> list[int]:
    points, b = [], 1
    while b < max_num_seqs:
        points.append(b)
        b *= 2
    return [*points, max_num_seqs]


@dataclass
class Row:
    batch: int
    k: int
    request_tokens_per_s: float
    replica_tokens_per_s: float
    speedup: float  # over k = 0 on the same engine


@dataclass
class Projection:
    pool: str
    request_class: str
    method: str
    alpha: float
    k_max: int
    rows: list[Row]

    @property
    def stops_paying_at(self) -> int | None:
        """The smallest load at which drafting no longer beats k = 0."""
        return next((r.batch for r in self.rows if r.k == 0 or r.speedup < 1), None)


class EngineCost:
    """`seconds(rows, method, k)` of one verify step on a pool, the shape `choose_k` asks for."""

    def __init__(
        self,
        target: StepModel,
        drafter: StepModel | None,
        remote: tuple[StepModel, float] | None,
        sync_cpu_s: float,
        context: int,
    ):
        self.target, self.drafter, self.remote = target, drafter, remote
        self.sync_cpu_s, self.context = sync_cpu_s, context

    def draft_seconds(self, rows: float, k: int) -> float:
        if k == 0:
            return 0.0
        if self.drafter is not None:
            return k * self.drafter.seconds(rows, 1, self.context)
        if self.remote is not None:
            worker, gpu_fraction = self.remote
            return REMOTE_CALL_S + k * worker.seconds(rows, 1, self.context) / gpu_fraction
        return 0.0

    def seconds(self, rows: float, method: str, k: int) -> float:
        return self.target.seconds(rows, 1 + k, self.context) + self.draft_seconds(rows, k) + self.sync_cpu_s


def pool_cost(table: CalibrationTable, model: ModelConfig, pool: PoolConfig, method: str, context: int) -> EngineCost:
    gpu, tp = model.accelerator.type, model.tensor_parallel_size
    target = StepModel.of(table, model.target().shape("source"), tp, gpu)
    spec = pool.speculation
    drafter = remote = None
    if method in IN_ENGINE_DRAFTERS and spec.draft is not None:
        drafter = StepModel.of(table, spec.draft.shape(f"pools.{pool.name}.speculation.draft"), tp, gpu)
    if method == REMOTE_DRAFT and spec.draft_worker is not None:
        worker = model.draft_worker(spec.draft_worker)
        remote = (
            StepModel.of(table, worker.shape(f"draft_workers.{worker.name}"), 1, worker.accelerator.type),
            worker.gpu_fraction,
        )
    sync = SYNC_CPU_S if spec.method == "routed" else 0.0
    return EngineCost(target, drafter, remote, sync, context)


def project_method(
    cost: EngineCost,
    pool: PoolConfig,
    request_class: str,
    method: str,
    k_max: int,
    alpha: float,
    max_num_seqs: int,
    fixed_k: bool = False,
) -> Projection:
    """Rows by load; `fixed_k`: the engine drafts k_max at every load (an in-engine drafter)."""
    survival = acceptance.survival(alpha, k_max)
    rows = []
    for batch in load_points(max_num_seqs):
        choice = choose_k(survival, cost, batch, method, 0, k_max, current=None, margin=0.0)
        k = k_max if fixed_k else choice.k
        rows.append(Row(batch, k, choice.goodput[k], choice.goodput[k] * batch, choice.goodput[k] / choice.goodput[0]))
    return Projection(pool.name, request_class, method, alpha, k_max, rows)


def class_k_max(model: ModelConfig, pool: PoolConfig, request_class: str) -> int:
    """The most draft tokens a class can be given on a pool: the tuner's bound where it tunes the
    class, else the class's fixed k."""
    bounds = model.tuned_k(request_class, pool)
    return model.class_k(request_class, pool) if bounds is None else bounds[2]


def _warnings(model: ModelConfig, table: CalibrationTable, context: int) -> list[str]:
    """Plans that cannot pay whatever the acceptance: a draft worker slower than its deadline or
    than the target step it is meant to shorten, at the most drafts a class can ask of it."""
    out = []
    gpu, tp = model.accelerator.type, model.tensor_parallel_size
    target_s = StepModel.of(table, model.target().shape("source"), tp, gpu).seconds(1, 1, context)
    for pool in model.pools:
        spec = pool.speculation
        if spec.draft_worker is None:
            continue
        worker = model.draft_worker(spec.draft_worker)
        step = StepModel.of(table, worker.shape(f"draft_workers.{worker.name}"), 1, worker.accelerator.type)
        one = step.seconds(1, 1, context) / worker.gpu_fraction
        drafting = [c.name for c in (model.router.classes if model.router else []) if REMOTE_DRAFT in c.methods]
        k = max((class_k_max(model, pool, c) for c in drafting), default=spec.num_speculative_tokens)
        total = REMOTE_CALL_S + k * one
        if total * 1e3 > worker.deadline_ms:
            out.append(
                f"draft worker {worker.name} on {worker.accelerator.type}: k={k} drafts take "
                f"{total * 1e3:.1f} ms at batch 1 ({one * 1e3:.2f} ms per token), over its deadline_ms "
                f"{worker.deadline_ms:g}: put it on a faster GPU or lower k"
            )
        if k * one > target_s:
            out.append(
                f"draft worker {worker.name} on {worker.accelerator.type}: {k} draft steps "
                f"({k * one * 1e3:.1f} ms) take longer than the {model.id} step they shorten "
                f"({target_s * 1e3:.1f} ms at batch 1): it cannot pay"
            )
    return out


def project_model(
    model: ModelConfig, table: CalibrationTable, alphas: dict, context: int = 2048
) -> tuple[list[Projection], list[str]]:
    """Every (pool, class, method) the router can choose for this GPU model; and warnings."""
    max_num_seqs = int(model.engine_kwargs.get("max_num_seqs", 256))
    out = []
    classes = model.router.classes if model.router is not None else []
    for request_class in classes:
        for method in request_class.methods:
            if method == "none":
                continue
            pool = model.pool_for_method(method, by_policy=True)
            routed = pool.speculation.method == "routed"
            k_max = class_k_max(model, pool, request_class.name) if routed else pool.speculation.num_speculative_tokens
            cost = pool_cost(table, model, pool, method, context)
            out.append(
                project_method(
                    cost,
                    pool,
                    request_class.name,
                    method,
                    k_max,
                    acceptance.alpha(alphas, request_class.name, method),
                    max_num_seqs,
                    fixed_k=not routed,
                )
            )
    return out, _warnings(model, table, context)
