"""What passes between the target replica, the worker extension, the routed proposer, the spec
tuner and the router: the worker RPCs and the shapes of what they carry.

`collective_rpc` crosses into vLLM's engine process as msgpack, which turns dataclasses into
dicts, so the reports are TypedDicts: one declared shape for the side that builds a report and
the side that reads it, with nothing to convert. `tests/test_contract.py` checks that each
producer builds exactly these keys, and that the worker extension implements `SpecControl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypedDict


@dataclass(frozen=True)
class DraftEndpoint:
    """Where the draft deployment is and how long a step may wait for it (sent by the replica
    to the worker extension as a dict: `asdict(endpoint)`, rebuilt with `DraftEndpoint(**d)`)."""

    gcs_address: str
    app_name: str
    deployment: str
    deadline_s: float
    retry_after_s: float


class AcceptanceTally(TypedDict):
    """One (request class, method) of a routed proposer, cumulative since the engine started."""

    request_class: str
    method: str
    drafts: int
    draft_tokens: int
    accepted_tokens: int
    # [p]: steps that asked for a draft token at position p, and drafts whose first p+1 tokens
    # were all accepted.
    asked_per_position: list[int]
    accepted_per_position: list[int]


class StepSample(TypedDict):
    """One forward pass of a routed engine that verified drafts and prefilled nothing."""

    rows: int
    verified_tokens: int
    forward_s: float


class DraftSample(TypedDict):
    """One drafting call of a routed proposer: `rows` requests of one method, up to `k` tokens."""

    method: str
    rows: int
    k: int
    seconds: float


class StepTimings(TypedDict):
    """Samples since the last read (reading drains them)."""

    steps: list[StepSample]
    drafts: list[DraftSample]


class DraftCallReport(TypedDict):
    """A routed proposer's calls to its draft worker: totals since the start, and (seconds
    waited, batch size) per call since the last read."""

    calls: int
    rows: int
    wait_s: float
    timeouts: int
    errors: int
    unavailable: int
    observations: list[tuple[float, int]]


# (request class, method, k, probe fraction): the k the spec tuner chose for a key, and the
# share of steps that try a neighbouring k so its cost stays measured.
TunedK = tuple[str, str, int, float]


class RoutedReport(StepTimings):
    """A routed pool's replica to the spec tuner: its books, and the k table it applies."""

    tallies: list[AcceptanceTally]
    applied: list[TunedK]


class TunerAnswer(TypedDict):
    tuned_k: list[TunedK]


class ClassShare(TypedDict):
    """A pool of one fixed method: a request class's share of the engine's per-position draft
    counts (by the share of the running requests it had at each step), cumulative."""

    request_class: str
    asked_per_position: list[float]
    accepted_per_position: list[float]


class EngineStep(TypedDict):
    rows: int
    seconds: float


class EngineReport(TypedDict):
    """A pool of one fixed method to the spec tuner (drained: steps since the last report)."""

    tallies: list[ClassShare]
    steps: list[EngineStep]


class ClassRoute(TypedDict):
    """The route table's entry for one request class: its method, and the share of its requests
    sent to each other method to keep their evidence fresh."""

    method: str
    explore: dict[str, float]


# model -> request class -> route: the spec tuner plans it, every ingress replica reads it.
RouteTable = dict[str, dict[str, ClassRoute]]


class SpecControl(Protocol):
    """The methods the worker extension mixes into every vLLM worker; the replica calls them
    by name with `collective_rpc` (the `*_RPC` names below)."""

    def attach_routed_proposer(self, draft_endpoint: dict | None = None, local_draft: str | None = None) -> bool: ...

    def routed_acceptance(self) -> list[AcceptanceTally]: ...

    def step_timings(self) -> StepTimings: ...

    def set_tuned_k(self, tuned_k: list[TunedK]) -> None: ...

    def remote_draft_stats(self) -> DraftCallReport | None: ...


# Named from the protocol: a rename fails at import, not at run time.
ATTACH_RPC = SpecControl.attach_routed_proposer.__name__
ACCEPTANCE_RPC = SpecControl.routed_acceptance.__name__
TIMINGS_RPC = SpecControl.step_timings.__name__
SET_K_RPC = SpecControl.set_tuned_k.__name__
DRAFT_STATS_RPC = SpecControl.remote_draft_stats.__name__
