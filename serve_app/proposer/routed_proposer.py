"""vLLM `custom_class` proposer that drafts per request with the method and k it was routed to.

vLLM fixes the speculation method and k at engine start; this proposer is built once per
worker with k_max and, at each step, reads every batch row's request (`extra_args`, see
`request_spec.py`) to decide what to propose for it: nothing, an ngram prompt-lookup draft, a
draft from the model's separately placed draft worker, or one from the draft model in this
worker (alone, or where prompt lookup finds no match), each of that request's own k.
A request whose k its client did not pin gets the spec tuner's k for its class and method
(`tuned_k`), so a new k applies from the next step, to requests already running too.
The model runner (needed to map batch rows to requests), the draft worker's endpoint and the
local draft model's checkpoint are handed over by `SpecControlExtension.attach_routed_proposer`
once the engine is up; until then every row gets no draft, which is plain decoding.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import numpy as np
from vllm.config import VllmConfig

from serve_app.proposer.acceptance import AcceptanceBook
from serve_app.proposer.local_draft import LocalDraftModel
from serve_app.proposer.remote_draft import RemoteDraftClient
from serve_app.proposer.request_spec import LOCAL_DRAFT, NGRAM_OR_DRAFT, REMOTE_DRAFT, RequestSpec
from serve_app.proposer.step_timer import StepTimer
from serve_app.vllm_seam import ngram_lookup, request_extra_args, scheduled_request_ids

DEFAULT_PROMPT_LOOKUP = (2, 4)


def probed_k(k: int, probe_fraction: float, k_max: int, rng: random.Random) -> int:
    """The tuner's k, moved one up or down on a few steps: the tuner learns acceptance and cost
    only at the k it sees, and a class tuned to 0 must still show when drafting pays again
    (probed at 1 or 2: a drafting cost per k needs two k)."""
    if probe_fraction and rng.random() < probe_fraction:
        k = k + rng.choice((-1, 1)) if k > 0 else rng.choice((1, 2))
    return max(0, min(k, k_max))


class RoutedProposer:
    def __init__(self, vllm_config: VllmConfig):
        spec = vllm_config.speculative_config
        self.k_max = spec.num_speculative_tokens
        self.max_model_len = vllm_config.model_config.max_model_len
        self.dtype = vllm_config.model_config.dtype
        self.runner = None
        self.remote: RemoteDraftClient | None = None
        self.local: LocalDraftModel | None = None
        self.book = AcceptanceBook()
        self.timer = StepTimer()
        # (request class, method) -> (k, share of steps probed at k+-1), set by the spec tuner.
        self.tuned_k: dict[tuple[str, str], tuple[int, float]] = {}
        self._rng = random.Random(0)
        lookup_min = spec.prompt_lookup_min or DEFAULT_PROMPT_LOOKUP[0]
        lookup_max = spec.prompt_lookup_max or max(lookup_min, DEFAULT_PROMPT_LOOKUP[1])
        self.ngram = ngram_lookup(vllm_config, lookup_min, lookup_max, self.k_max)

    def attach(self, runner, remote: RemoteDraftClient | None = None, local_draft: str | None = None) -> None:
        """`remote` and `local_draft` (a checkpoint) are given to the TP rank whose drafts vLLM uses;
        other ranks never draft."""
        if local_draft is not None:
            self.local = LocalDraftModel(local_draft, self.dtype, runner.device)
        self.runner = runner
        self.remote = remote

    def load_model(self, *args, **kwargs) -> None:
        """No weights at engine start: the local draft model, if any, loads at `attach`."""

    # What the worker extension's RPCs read and set (the target server calls them per period).
    def acceptance(self) -> list[dict]:
        """Cumulative drafts and acceptance per (request class, method)."""
        return self.book.snapshot()

    def timings(self) -> dict[str, list[dict]]:
        """Forward-pass and drafting times since the last read (see `StepTimer`)."""
        return self.timer.drain()

    def set_tuned_k(self, tuned_k: list[tuple[str, str, int, float]]) -> None:
        """The spec tuner's (k, probe fraction) per (request class, method), from the next step on."""
        self.tuned_k = {(c, m): (k, probe) for c, m, k, probe in tuned_k}

    def remote_stats(self) -> dict | None:
        """Draft worker calls since the start, and the latency observations since the last read."""
        return self.remote.stats.drain() if self.remote is not None else None

    def request_specs(self, req_ids: list[str]) -> list[RequestSpec]:
        # One probe per tuned key and step, not per row: a drafting call costs its largest k, so
        # rows probed apart in a large batch would never show the cost of another k.
        step_k: dict[tuple[str, str], int] = {}
        specs = []
        for req_id in req_ids:
            spec = RequestSpec.from_extra_args(request_extra_args(self.runner, req_id), self.k_max)
            key = (spec.request_class, spec.method)
            if spec.tuned and key in self.tuned_k:
                if key not in step_k:  # only the keys in this batch: this runs every engine step
                    step_k[key] = probed_k(*self.tuned_k[key], self.k_max, self._rng)
                spec = replace(spec, k=step_k[key])
            specs.append(spec)
        return specs

    def propose(
        self,
        sampled_token_ids: list[list[int]],
        num_tokens_no_spec: np.ndarray,
        token_ids_cpu: np.ndarray,
        slot_mappings=None,
    ) -> list[list[int]]:
        forward_end = time.perf_counter()
        rows = len(sampled_token_ids)
        drafts: list[list[int]] = [[] for _ in range(rows)]
        if self.runner is None:
            return drafts
        req_ids = scheduled_request_ids(self.runner, rows)
        specs = self.request_specs(req_ids)
        ngram_rows = {i for i, s in enumerate(specs) if s.method in ("ngram", NGRAM_OR_DRAFT) and s.k > 0}
        if ngram_rows:
            start = time.perf_counter()
            # One batched lookup at the largest k asked for; each row is then cut to its own k.
            only_ngram = [ids if i in ngram_rows else [] for i, ids in enumerate(sampled_token_ids)]
            k = max(specs[i].k for i in ngram_rows)
            proposed = self.ngram.propose(k, only_ngram, num_tokens_no_spec, token_ids_cpu)
            for i in ngram_rows:
                drafts[i] = list(proposed[i][: specs[i].k])
            self.timer.drafted("ngram", len(ngram_rows), k, time.perf_counter() - start)
        remote_rows = [
            i
            for i, s in enumerate(specs)
            if s.method == REMOTE_DRAFT
            and s.k > 0
            and sampled_token_ids[i]
            and num_tokens_no_spec[i] < self.max_model_len - 1
        ]
        if remote_rows and self.remote is not None:
            # The whole context each time: the draft worker's prefix cache makes all but the new tokens free.
            contexts = [token_ids_cpu[i, : num_tokens_no_spec[i]].copy() for i in remote_rows]
            ks = [min(specs[i].k, self.max_model_len - 1 - int(num_tokens_no_spec[i])) for i in remote_rows]
            start = time.perf_counter()
            proposed = self.remote.propose(contexts, ks)
            if proposed is not None:
                self.timer.drafted(REMOTE_DRAFT, len(remote_rows), max(ks), time.perf_counter() - start)
            for i, k, tokens in zip(remote_rows, ks, proposed or []):
                drafts[i] = list(tokens[:k])
        self._draft_locally(req_ids, specs, drafts, sampled_token_ids, num_tokens_no_spec, token_ids_cpu)
        # A row still prefilling (nothing sampled) cannot be drafted for: it asked for nothing.
        asks = [
            (s.request_class, s.method, s.k if sampled else 0, len(d))
            for s, d, sampled in zip(specs, drafts, sampled_token_ids)
        ]
        verified = self.book.step(req_ids, sampled_token_ids, asks)
        self.timer.step_done(req_ids, sampled_token_ids, verified, forward_end)
        return drafts

    def _draft_locally(self, req_ids, specs, drafts, sampled_token_ids, num_tokens_no_spec, token_ids_cpu) -> None:
        """Drafts from the local model for `local_draft` rows and `ngram_or_draft` rows without a match."""
        if self.local is None:
            return
        rows = []
        for i, spec in enumerate(specs):
            wanted = spec.method == LOCAL_DRAFT or (spec.method == NGRAM_OR_DRAFT and not drafts[i])
            room = self.max_model_len - 1 - int(num_tokens_no_spec[i])
            if wanted and spec.k > 0 and sampled_token_ids[i] and room > 0:
                rows.append((i, min(spec.k, room)))
        if rows:
            start = time.perf_counter()
            proposed = self.local.propose(
                [(req_ids[i], token_ids_cpu[i, : num_tokens_no_spec[i]].copy(), k) for i, k in rows]
            )
            seconds = time.perf_counter() - start
            for (i, _), tokens in zip(rows, proposed):
                drafts[i] = tokens
            # One call drafts every method's rows: each method's steps pay all of it.
            for method in {specs[i].method for i, _ in rows}:
                self.timer.drafted(method, len(rows), max(k for _, k in rows), seconds)
        self.local.keep_only(set(req_ids))
