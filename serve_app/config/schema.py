"""The one schema behind `serve run`, `serve_app.check` and the KubeRay manifest.

It is the `args:` block of a Ray Serve config file; Ray Serve validates it against this model
when it calls `serve_app.app:build_app`, and `python -m serve_app.check` does the same offline.
Every check that can be made without a GPU is made here, so a bad config fails at load with
the field's path and what to change.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serve_app.config.architecture import Architecture, find_hf_config, resolve_architecture, resolve_source
from serve_app.config.placement import GPU_MEMORY_GIB, plan_model
from serve_app.config.vllm_speculative import K_FROM_DRAFT_CONFIG, to_schema_fields
from serve_app.proposer.request_spec import (
    DEFAULT_CLASS,
    LOCAL_DRAFT_METHODS,
    LOCAL_DRAFT_MODEL_TYPES,
    REMOTE_DRAFT,
    ROUTED_METHODS,
)
from serve_app.router.classifier import RECOGNISED_CLASSES

K_MAX = 16

SpeculationMethod = Literal[
    "none",
    "ngram",
    "suffix",
    "draft_model",
    "eagle",
    "eagle3",
    "mtp",
    "medusa",
    "mlp_speculator",
    "custom_class",
    "routed",
]
# `routed`: the project's custom_class proposer, which runs the method and k chosen per request.
ROUTED_PROPOSER = "serve_app.proposer.routed_proposer.RoutedProposer"
WORKER_EXTENSION = "serve_app.proposer.worker_extension.SpecControlExtension"
# Methods whose proposer is a separate checkpoint that must be named in `speculation.draft`.
METHODS_WITH_DRAFT = {"draft_model", "eagle", "eagle3", "medusa", "mlp_speculator"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckpointConfig(_Strict):
    source: str = Field(description="Local path (relative to the project root) or hub id.")
    architecture: Architecture | None = Field(
        None,
        description="Shape of the model; needed only where no config.json can be found (local checkpoint, "
        "Hugging Face cache, hub) and the id is not in the built-in catalogue.",
    )

    def shape(self, field: str) -> Architecture:
        arch = self.architecture or resolve_architecture(self.source)
        if arch is None:
            raise ValueError(
                f"{field}: cannot tell the shape of '{self.source}' (no config.json in a local checkpoint "
                f"or the Hugging Face cache, the hub did not give one, and it is not in the catalogue); "
                f"download it once (`hf download {self.source} config.json`), or add "
                f"`architecture:` (num_layers, hidden_size, num_attention_heads, num_kv_heads, head_dim, "
                f"intermediate_size, vocab_size) under {field}"
            )
        return arch


class ClassTuningConfig(_Strict):
    """Per request class limits on the spec tuner."""

    enabled: bool = Field(True, description="false: the class keeps its configured k.")
    k_min: int = Field(0, ge=0, le=K_MAX, description="0 lets the tuner turn drafting off for the class.")
    k_max: int | None = Field(None, ge=1, le=K_MAX, description="The pool's num_speculative_tokens by default.")

    @model_validator(mode="after")
    def _bounds(self) -> ClassTuningConfig:
        if self.k_max is not None and self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) > k_max ({self.k_max}); lower k_min or raise k_max")
        return self


class TunerConfig(_Strict):
    """The spec tuner: k per request class and method of a routed pool, from live acceptance and step cost."""

    enabled: bool = True
    period_s: float = Field(5.0, ge=0.5, le=300, description="How often replicas report and the tuner decides.")
    memory_steps: float = Field(
        150,
        gt=0,
        description="Drafting steps the acceptance estimate remembers: each newer "
        "step that asked for drafts forgets 1/memory_steps of the past.",
    )
    shift_threshold: float = Field(
        0.3,
        gt=0,
        le=1,
        description="A change in first-draft-token acceptance, "
        "recent steps against the estimate, that counts as "
        "a new workload: the estimate then restarts from the "
        "newest period's steps. 1 never restarts.",
    )
    smoothing: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Weight of the newest period's goodput per k against the "
        "earlier ones at about the same batch size, so one noisy cost fit cannot move k.",
    )
    min_drafts: int = Field(
        20,
        ge=1,
        description="Drafts that must reach a draft position before its acceptance "
        "is trusted; deeper positions are extrapolated.",
    )
    margin: float = Field(0.05, ge=0, lt=1, description="A new k must beat the current one's goodput by this share.")
    min_dwell_s: float = Field(10.0, ge=0, description="Least time between two changes of one class's k.")
    probe_fraction: float = Field(
        0.1, ge=0, le=0.5, description="Share of steps drafted at k+-1, so acceptance and cost are known around k."
    )
    zero_probe_fraction: float = Field(
        0.2,
        ge=0,
        le=0.5,
        description="Share of steps drafted at 1 or 2 while k is 0: the only evidence that drafting pays again.",
    )
    cost_window_s: float = Field(60.0, gt=0, description="Age of the oldest step timing in the cost fit.")
    classes: dict[str, ClassTuningConfig] = Field(default_factory=dict, description="Per request class limits.")

    def limits(self, request_class: str, k_max: int) -> tuple[int, int] | None:
        """(k_min, k_max) for a class, None when the class is not tuned."""
        tuning = self.classes.get(request_class, ClassTuningConfig())
        if not (self.enabled and tuning.enabled):
            return None
        return tuning.k_min, min(tuning.k_max or k_max, k_max)


class SpeculationConfig(_Strict):
    # "Method" names two things, as in vLLM: the engine's setup here, and the method a request
    # gets (`methods()`, the `x-spec-method` header, the router's choice). They are the same
    # except for `routed`, one engine whose requests each get ngram, remote_draft, local_draft,
    # ngram_or_draft or none.
    method: SpeculationMethod = Field(
        "none",
        description="The pool engine's speculation: a vLLM method, which every request on the pool "
        "gets, or 'routed' (this app's proposer: a method per request, k per request).",
    )
    num_speculative_tokens: int | None = Field(None, ge=1, le=K_MAX)
    draft: CheckpointConfig | None = Field(
        None,
        description="Draft model or head, for methods that need one; on a 'routed' pool, a draft model its "
        f"worker loads for {' and '.join(LOCAL_DRAFT_METHODS)} requests.",
    )
    speculative_config: dict[str, Any] | None = Field(
        None,
        description="vLLM's --speculative-config JSON as it is, instead of method, num_speculative_tokens, "
        "draft and options (config/vllm_speculative.py reads it as vLLM does).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Passed as-is into vLLM's speculative_config.")
    draft_worker: str | None = Field(
        None, description="Method 'routed' only: the model's draft worker that drafts for 'remote_draft' requests."
    )
    tuner: TunerConfig | None = Field(None, description="Method 'routed' only: tune k live per request class.")

    @model_validator(mode="before")
    @classmethod
    def _from_vllm_json(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("speculative_config") is not None:
            return to_schema_fields(data)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SpeculationConfig:
        if self.method == "none":
            if self.num_speculative_tokens is not None or self.draft is not None:
                raise ValueError("method 'none' takes no num_speculative_tokens or draft; remove them or pick a method")
            return self
        if self.num_speculative_tokens is None and self.method not in K_FROM_DRAFT_CONFIG:
            raise ValueError(f"method '{self.method}' needs num_speculative_tokens (1..{K_MAX})")
        if self.method in METHODS_WITH_DRAFT and self.draft is None:
            raise ValueError(
                f"method '{self.method}' needs a draft model: set draft.source "
                f"(e.g. a local checkpoint path or a hub id)"
            )
        if self.method not in METHODS_WITH_DRAFT | {"routed"} and self.draft is not None:
            raise ValueError(f"method '{self.method}' does not use a draft model; remove `draft`")
        if self.method != "routed" and self.draft_worker is not None:
            raise ValueError("draft_worker is used by method 'routed' only; remove it or set method: routed")
        if self.method != "routed" and self.tuner is not None:
            raise ValueError(
                "tuner applies to method 'routed' only (in-engine drafters fix k at engine start; use "
                "options.num_speculative_tokens_per_batch_size there); remove it or set method: routed"
            )
        if self.tuner is not None:
            for name, tuning in self.tuner.classes.items():
                if tuning.k_min > self.num_speculative_tokens or (tuning.k_max or 0) > self.num_speculative_tokens:
                    raise ValueError(
                        f"tuner.classes.{name}: k_min/k_max must be at most num_speculative_tokens "
                        f"({self.num_speculative_tokens}); lower them"
                    )
        if schedule := self.options.get("num_speculative_tokens_per_batch_size"):
            _check_k_schedule(schedule, self.num_speculative_tokens)
        return self

    def tuned(self) -> bool:
        """Whether the spec tuner sets this pool's k."""
        return self.tuner is not None and self.tuner.enabled

    def methods(self) -> tuple[str, ...]:
        """The speculation methods a request sent to this pool can get."""
        if self.method != "routed":
            return (self.method,)
        unavailable = set() if self.draft_worker is not None else {REMOTE_DRAFT}
        if self.draft is None:
            unavailable |= set(LOCAL_DRAFT_METHODS)
        return tuple(m for m in ROUTED_METHODS if m not in unavailable)

    def local_draft_source(self) -> str | None:
        """The checkpoint a routed pool's worker loads for its local draft methods."""
        return resolve_source(self.draft.source) if self.method == "routed" and self.draft is not None else None

    def vllm_config(self) -> dict[str, Any] | None:
        if self.method == "none":
            return None
        cfg: dict[str, Any] = {"method": self.method}
        if self.num_speculative_tokens is not None:  # else the draft's config.json says (K_FROM_DRAFT_CONFIG)
            cfg["num_speculative_tokens"] = self.num_speculative_tokens
        if self.method == "routed":
            cfg.update(method="custom_class", model=ROUTED_PROPOSER)
        elif self.draft is not None:
            cfg["model"] = resolve_source(self.draft.source)
        return {**cfg, **self.options}


class AcceleratorConfig(_Strict):
    kind: Literal["cpu", "gpu"] = "cpu"
    type: str | None = Field(None, description="Ray accelerator type, e.g. H100, L4, A100-80G (GPU only).")
    memory_gib: float | None = Field(None, gt=0, description="Memory per GPU; defaults from `type`.")

    @model_validator(mode="after")
    def _gpu_fields(self) -> AcceleratorConfig:
        if self.kind == "cpu" and (self.type or self.memory_gib):
            raise ValueError("type and memory_gib apply to kind 'gpu' only; remove them or set kind: gpu")
        if self.kind == "gpu" and self.memory_gib is None:
            if self.type not in GPU_MEMORY_GIB:
                raise ValueError(f"set memory_gib for GPU type {self.type!r} (known types: {sorted(GPU_MEMORY_GIB)})")
            self.memory_gib = GPU_MEMORY_GIB[self.type]
        return self


class AutoscalingConfig(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    # Ray Serve LLM's default is 1e9, which never scales up; a finite default is the point here.
    target_ongoing_requests: float = Field(8, gt=0)
    # A new engine takes minutes to load a large model: add replicas soon, remove them late.
    upscale_delay_s: float = Field(30, ge=0)
    downscale_delay_s: float = Field(600, ge=0)
    # Engine signals on top of the in-flight rule (serve_app/autoscaling/policy.py).
    max_waiting_requests: float = Field(
        1.0, ge=0, description="Requests waiting for a batch slot per replica (mean) above which a replica is added."
    )
    ttft_slo_s: float | None = Field(
        None, gt=0, description="p90 time to first token above which replicas are added; unset: TTFT is not watched."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas}); "
                f"lower min_replicas or raise max_replicas"
            )
        return self


# Pools and draft workers alike.
CpuCores = Annotated[
    str | None,
    Field(
        pattern=r"^[0-9,\-|]+$",
        description=(
            "CPU only: the cores this engine's threads bind to (vLLM's VLLM_CPU_OMP_THREADS_BIND, one '|'-separated "
            "group per TP rank), so engines that would otherwise all bind to the same core run side by side."
        ),
    ),
]


class DraftWorkerConfig(CheckpointConfig):
    """A draft model served by its own deployment, apart from the targets, shared by their replicas."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(None, description="The target's by default.")
    max_model_len: int | None = Field(None, ge=16, description="The target's max_model_len + k by default.")
    accelerator: AcceleratorConfig = Field(default_factory=AcceleratorConfig)
    gpu_fraction: float = Field(1.0, gt=0, le=1, description="Share of one GPU per replica (GPU only).")
    cpu_cores: CpuCores = None
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Share of the GPU's memory vLLM may take; 0.9 x gpu_fraction by default."
    )
    runtime_overhead_gib: float = Field(1.0, ge=0)
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    # Each target replica has at most one draft call in flight per engine step.
    max_ongoing_requests: int = Field(16, ge=1)
    deadline_ms: float = Field(
        50, gt=0, description="How long a target step waits for drafts before it decodes without them."
    )
    retry_after_s: float = Field(
        1.0,
        gt=0,
        description="After a timeout or failure, how long targets decode without this pool before they try it again.",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vLLM engine arguments.")

    @model_validator(mode="after")
    def _memory_share(self) -> DraftWorkerConfig:
        if self.accelerator.kind == "cpu" and self.gpu_fraction != 1.0:
            raise ValueError("gpu_fraction applies to accelerator kind 'gpu' only; remove it or set kind: gpu")
        if self.accelerator.kind != "cpu" and self.cpu_cores is not None:
            raise ValueError("cpu_cores applies to accelerator kind 'cpu' only; remove it")
        if self.gpu_memory_utilization is None:
            self.gpu_memory_utilization = round(0.9 * self.gpu_fraction, 4)
        elif self.gpu_memory_utilization > self.gpu_fraction:
            raise ValueError(
                f"gpu_memory_utilization {self.gpu_memory_utilization} exceeds gpu_fraction "
                f"{self.gpu_fraction}: replicas sharing a GPU would take each other's memory; "
                f"lower it to at most {self.gpu_fraction}"
            )
        return self


class PoolConfig(_Strict):
    """One target deployment: the model's engine with one speculation setup."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    speculation: SpeculationConfig = Field(default_factory=SpeculationConfig)
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    max_ongoing_requests: int = Field(64, ge=1)
    cpu_cores: CpuCores = None
    policy_traffic: bool = Field(
        True,
        description=(
            "Whether the router's policy (goodput, high load) may send requests here. false: only requests that "
            "name the pool or its method (x-spec-pool, x-spec-method) or need plain decoding (min_p, logit_bias) "
            "come here; for a pool on cores another pool's engine also uses, where traffic the goodput policy "
            "sends to it as an idle pool slows that engine."
        ),
    )


class RequestClassConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    methods: list[str] = Field(min_length=1, description="Speculation methods this class may use.")
    default: str = Field(description="The method the static policy picks, and the goodput policy starts from.")
    num_speculative_tokens: int | None = Field(None, ge=1, le=K_MAX, description="k for routed methods.")
    header_only: bool = Field(
        False,
        description="Requests reach this class only by the x-request-class header (the classifier does not know it).",
    )

    @model_validator(mode="after")
    def _default_allowed(self) -> RequestClassConfig:
        if self.default not in self.methods:
            raise ValueError(f"default '{self.default}' is not in methods {self.methods}; add it or pick one of them")
        return self


class RouterConfig(_Strict):
    """How a request's class is found and which speculation method it gets."""

    classes: list[RequestClassConfig] = Field(min_length=1)
    default_class: str = Field(description="Class of requests the classifier cannot place.")
    policy: Literal["static", "goodput"] = Field(
        "static",
        description="static: every request of a class gets its default. goodput: the spec tuner weighs "
        "each method's measured acceptance for the class and step cost on its pool, and the "
        "class gets the method with the most tokens per second (serve_app/router/planner.py).",
    )
    explore_share: float = Field(
        0.05,
        ge=0,
        le=0.5,
        description="goodput: share of a class's requests sent to "
        "its other methods while their evidence is missing "
        "or stale.",
    )
    explore_after_s: float = Field(
        300.0,
        gt=0,
        description="goodput: a method's evidence for a class is stale "
        "this long after it last grew; then it is explored "
        "again (drift in a workload takes minutes).",
    )
    switch_margin: float = Field(
        0.1,
        ge=0,
        description="goodput: how much more goodput (relative) another method needs to replace the current one.",
    )
    # Under load, verifying drafts costs more than it saves. The goodput policy sees that in the step
    # costs, a period late; above this many requests in flight per target replica, requests go
    # without speculation at once.
    high_load_in_flight: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _default_class_exists(self) -> RouterConfig:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if self.default_class not in names:
            raise ValueError(f"default_class '{self.default_class}' is not a class; use one of {names}")
        for c in self.classes:
            if c.name not in RECOGNISED_CLASSES and c.name != self.default_class and not c.header_only:
                raise ValueError(
                    f"class '{c.name}' is not one the classifier recognises {list(RECOGNISED_CLASSES)} "
                    f"and not the default_class, so no request would reach it unasked; set "
                    f"header_only: true on it (clients name it in x-request-class) or rename it"
                )
        return self

    def request_class(self, name: str) -> RequestClassConfig:
        return next(c for c in self.classes if c.name == name)


class ModelConfig(_Strict):
    id: str = Field(description="The model name clients send in the `model` field.")
    source: str
    architecture: Architecture | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int = Field(8192, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    # Activations, CUDA graphs and allocator slack that vLLM keeps apart from weights and KV cache.
    runtime_overhead_gib: float = Field(2.0, ge=0)
    accelerator: AcceleratorConfig = Field(default_factory=AcceleratorConfig)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vLLM engine arguments.")
    draft_workers: list[DraftWorkerConfig] = Field(
        default_factory=list, description="Draft models deployed apart from the targets (see speculation.draft_worker)."
    )
    pools: list[PoolConfig] = Field(min_length=1)
    default_pool: str | None = Field(
        None, description="Pool used when a request names none and there is no router; the first by default."
    )
    router: RouterConfig | None = Field(None, description="Per-request choice of speculation method.")

    def target(self) -> CheckpointConfig:
        return CheckpointConfig(source=self.source, architecture=self.architecture)

    def pool(self, name: str | None) -> PoolConfig:
        name = name or self.default_pool or self.pools[0].name
        return next(p for p in self.pools if p.name == name)

    def draft_worker(self, name: str) -> DraftWorkerConfig:
        return next(w for w in self.draft_workers if w.name == name)

    def draft_max_model_len(self, worker: DraftWorkerConfig) -> int:
        return worker.max_model_len or self.max_model_len + K_MAX

    def routes_by_goodput(self) -> bool:
        """Whether the spec tuner plans this model's routes (router.policy: goodput)."""
        return self.router is not None and self.router.policy == "goodput"

    def reporting_pools(self) -> list[PoolConfig]:
        """Pools of one fixed method whose engines report step times and per-class draft counts
        to the spec tuner: all of them where it plans the routes (the router's evidence), and the
        speculative ones everywhere (GET /v1/spec/acceptance)."""
        return [
            p
            for p in self.pools
            if p.speculation.method != "routed" and (self.routes_by_goodput() or p.speculation.method != "none")
        ]

    def class_names(self) -> list[str]:
        return [c.name for c in self.router.classes] if self.router is not None else [DEFAULT_CLASS]

    def class_k(self, request_class: str, pool: PoolConfig) -> int:
        """k on a routed pool for a class whose client did not pin it: the class's, else the pool's k_max."""
        k_max = pool.speculation.num_speculative_tokens
        if self.router is None:
            return k_max
        return self.router.request_class(request_class).num_speculative_tokens or k_max

    def tuned_k(self, request_class: str, pool: PoolConfig) -> tuple[int, int, int] | None:
        """(starting k, k_min, k_max) of a class the pool's tuner tunes, None when it does not:
        the tuner and the planner both read k's bounds here, so they cannot disagree."""
        tuner = pool.speculation.tuner
        limits = tuner.limits(request_class, pool.speculation.num_speculative_tokens) if tuner else None
        if limits is None:
            return None
        return min(max(self.class_k(request_class, pool), limits[0]), limits[1]), *limits

    def pool_for_method(self, method: str, by_policy: bool = False) -> PoolConfig | None:
        """The pool that serves `method`: a dedicated pool first (for "none" that avoids the
        speculation path altogether), else a routed pool that runs it per request; `by_policy`:
        among the pools the router's policy may send to."""
        pools = [p for p in self.pools if p.policy_traffic or not by_policy]
        dedicated = [p for p in pools if p.speculation.method == method]
        routed = [p for p in pools if method in p.speculation.methods()]
        return (dedicated or routed or [None])[0]

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        if self.default_pool is not None and self.default_pool not in names:
            raise ValueError(f"default_pool '{self.default_pool}' is not a pool; use one of {names}")
        for pool in self.pools:
            if pool.cpu_cores is not None and self.accelerator.kind != "cpu":
                raise ValueError(f"pools.{pool.name}.cpu_cores applies to accelerator kind 'cpu' only; remove it")
            if pool.cpu_cores is not None and len(pool.cpu_cores.split("|")) != self.tensor_parallel_size:
                raise ValueError(
                    f"pools.{pool.name}.cpu_cores '{pool.cpu_cores}' needs one '|'-separated group of "
                    f"cores per TP rank ({self.tensor_parallel_size})"
                )
        for key in ("model", "served_model_name", "tensor_parallel_size", "speculative_config", "dtype"):
            if key in self.engine_kwargs:
                raise ValueError(f"engine_kwargs.{key} is set by the schema; use the model's own field instead")
        target = self.target().shape("source")
        if target.num_attention_heads % self.tensor_parallel_size:
            raise ValueError(
                f"tensor_parallel_size {self.tensor_parallel_size} does not divide the {target.num_attention_heads} "
                f"attention heads of '{self.source}'; use a divisor of {target.num_attention_heads}"
            )
        workers = [w.name for w in self.draft_workers]
        if len(set(workers)) != len(workers):
            raise ValueError(f"draft_workers names must be unique, got {workers}")
        for w, worker in enumerate(self.draft_workers):
            _check_shared_vocabulary(worker.shape(f"draft_workers[{w}]"), target, f"draft_workers[{w}]")
            if self.draft_max_model_len(worker) < self.max_model_len:
                raise ValueError(
                    f"draft_workers[{w}].max_model_len {worker.max_model_len} is shorter than the "
                    f"target's {self.max_model_len}; raise it or leave it unset"
                )
        for i, pool in enumerate(self.pools):
            spec = pool.speculation
            if spec.method in ("draft_model", "routed") and spec.draft is not None:
                _check_shared_vocabulary(
                    spec.draft.shape(f"pools[{i}].speculation.draft"), target, f"pools[{i}].speculation.draft"
                )
            if spec.local_draft_source() is not None:
                model_type = (find_hf_config(spec.draft.source) or {}).get("model_type")
                if model_type is not None and model_type not in LOCAL_DRAFT_MODEL_TYPES:
                    raise ValueError(
                        f"pools[{i}].speculation.draft: a routed pool runs its draft model itself, for "
                        f"{', '.join(LOCAL_DRAFT_MODEL_TYPES)} architectures only (this one is '{model_type}'); "
                        f"use a draft_worker for remote_draft, or a draft_model pool"
                    )
            if spec.draft_worker is not None and spec.draft_worker not in workers:
                raise ValueError(
                    f"pools[{i}].speculation.draft_worker '{spec.draft_worker}' is not a draft worker "
                    f"of this model; add it under draft_workers or use one of {workers}"
                )
        unused = set(workers) - {p.speculation.draft_worker for p in self.pools}
        if unused:
            raise ValueError(
                f"draft_workers {sorted(unused)} are drafted for by no pool; set speculation.draft_worker "
                f"of a routed pool to them or remove them"
            )
        class_names = set(self.class_names())
        for i, pool in enumerate(self.pools):
            tuner = pool.speculation.tuner
            if tuner is not None and (unknown := set(tuner.classes) - class_names):
                raise ValueError(
                    f"pools[{i}].speculation.tuner.classes: {sorted(unknown)} are not request classes; "
                    f"use some of {sorted(class_names)}"
                )
        if self.router is not None:
            for c, request_class in enumerate(self.router.classes):
                for method in request_class.methods:
                    if self.pool_for_method(method, by_policy=True) is None:
                        raise ValueError(
                            f"router.classes[{c}] ({request_class.name}) allows method '{method}' but no pool the "
                            f"router may send to serves it (policy_traffic); add a pool with speculation.method "
                            f"'{method}' (or 'routed' for ngram and none, "
                            f"with a draft_worker for {REMOTE_DRAFT}, with a draft for "
                            f"{', '.join(LOCAL_DRAFT_METHODS)})"
                        )
        for fit in plan_model(self):
            if not fit.fits:
                raise ValueError(f"{fit.role} '{fit.name}' does not fit: {fit.explain()}")
        return self


def _check_k_schedule(schedule: Any, k: int) -> None:
    from vllm.v1.spec_decode.dynamic.utils import validate_and_normalize_dynamic_sd_schedule

    try:
        parsed = validate_and_normalize_dynamic_sd_schedule(schedule)
    except ValueError as e:
        raise ValueError(
            f"options.num_speculative_tokens_per_batch_size: {e} Write it as "
            f"[[1, 16, {k}], [17, 64, 2], ...]: [first batch size, last batch size, k]"
        ) from e
    if too_big := [entry for entry in parsed if entry[2] > k]:
        raise ValueError(
            f"options.num_speculative_tokens_per_batch_size: entries {too_big} ask for more than "
            f"num_speculative_tokens ({k}); raise num_speculative_tokens or lower them"
        )


def _check_shared_vocabulary(draft: Architecture, target: Architecture, field: str) -> None:
    if draft.vocab_size != target.vocab_size:
        raise ValueError(
            f"{field}: vocabulary size {draft.vocab_size} differs from the target's {target.vocab_size}; "
            f"drafting needs a draft that shares the target's tokenizer"
        )


_KEY_SOURCE = r"^\S+$"


class AccessConfig(_Strict):
    """Who may call the app (`serve_app/ingress/access.py`). Keys come from an environment
    variable (comma-separated) or a file with one key per line (a mounted Kubernetes Secret)."""

    api_keys_env: str | None = Field(
        None,
        pattern=_KEY_SOURCE,
        description=(
            "Environment variable with the API keys that inference and state routes require as "
            "`Authorization: Bearer KEY`. No API keys configured: those routes are open."
        ),
    )
    api_keys_file: str | None = Field(None, pattern=_KEY_SOURCE, description="File with API keys, one per line.")
    control_keys_env: str | None = Field(
        None,
        pattern=_KEY_SOURCE,
        description=(
            "Environment variable with the keys of the control routes (POST /v1/spec/tuner/pin). None configured: "
            "those routes answer 404."
        ),
    )
    control_keys_file: str | None = Field(
        None, pattern=_KEY_SOURCE, description="File with control keys, one per line."
    )
    expose_state: bool = Field(
        True, description="GET /v1/spec/tuner and /v1/spec/router (per-class figures, no prompt text); false: 404."
    )


class OverloadConfig(_Strict):
    """What an ingress replica answers past its share of the load, instead of queueing without bound."""

    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Completions one ingress replica serves at once; past it they get status_code "
        "at once. Default: what the pools hold at their max replicas (each pool's "
        "max_ongoing_requests x max_replicas), shared by the ingress replicas.",
    )
    max_queued_requests: int = Field(
        256,
        ge=1,
        description="Requests a Serve proxy queues for a busy ingress replica (health and state "
        "calls too); past it Serve answers status_code itself.",
    )
    status_code: Literal[429, 503] = 429
    retry_after_s: float = Field(1.0, gt=0, description="The Retry-After header of a refused request.")


class IngressConfig(_Strict):
    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(256, ge=1)
    access: AccessConfig = Field(default_factory=AccessConfig)
    # A 32k-token prompt is about 130 KB of text; chat histories and tool schemas add to it.
    max_body_bytes: int = Field(4 * 2**20, ge=1024, description="Larger request bodies get 413.")
    overload: OverloadConfig = Field(default_factory=OverloadConfig)


class AppConfig(_Strict):
    """The `args` of the `serve_app.app:build_app` application."""

    models: list[ModelConfig] = Field(min_length=1)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    shutdown_grace_s: float = Field(
        20,
        gt=0,
        description="How long a replica that is scaled down or replaced finishes its in-flight "
        "requests (Serve's graceful_shutdown_timeout_s on every deployment).",
    )

    def tuner_roles(self) -> dict[str, bool]:
        """What the spec tuner does in this app; the app runs one where any holds, and each
        backs a route under /v1/spec. tuned: it sets k on routed pools; planned: it plans a
        model's routes; speculating: it hears acceptance from tuned pools and every speculative
        pool of one method."""
        pools = [(m, p) for m in self.models for p in m.pools]
        return {
            "tuned": any(p.speculation.tuned() for _, p in pools),
            "planned": any(m.routes_by_goodput() for m in self.models),
            "speculating": any(
                p.speculation.tuned() or (p in m.reporting_pools() and p.speculation.method != "none") for m, p in pools
            ),
            # plain pools report step times where the tuner plans routes
            "reporting": any(m.reporting_pools() for m in self.models),
        }

    @model_validator(mode="after")
    def _unique_ids(self) -> AppConfig:
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be unique, got {ids}")
        return self

    @model_validator(mode="after")
    def _admission(self) -> AppConfig:
        ingress, overload = self.ingress, self.ingress.overload
        if overload.max_in_flight is None:
            held = sum(p.max_ongoing_requests * p.autoscaling.max_replicas for m in self.models for p in m.pools)
            overload.max_in_flight = max(1, min(-(-held // ingress.num_replicas), ingress.max_ongoing_requests - 8))
        elif overload.max_in_flight >= ingress.max_ongoing_requests:
            # Serve stops sending a replica requests at max_ongoing_requests; health and state
            # calls would then queue behind completions the replica is about to refuse.
            raise ValueError(
                f"ingress.overload.max_in_flight ({overload.max_in_flight}) must be under "
                f"ingress.max_ongoing_requests ({ingress.max_ongoing_requests}); lower it or raise "
                f"max_ongoing_requests"
            )
        return self


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: the field's path, then what is wrong and how to fix it."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<config>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {msg}")
    return "\n".join(lines)
