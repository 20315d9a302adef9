"""Per request class and method acceptance, counted where the drafts are made.

vLLM's spec-decode counters are per engine; a routed engine mixes classes and methods, so
the proposer keeps its own books. What a request sampled in a step tells how many of the
drafts proposed for it in the previous step were accepted: the sampled tokens are the
accepted drafts plus one token of the target's own.

A step that asked for k drafts but got fewer (no ngram match, a draft call past its deadline)
counts against the positions it asked for: the tuner weighs what asking for k yields, and an
ngram lookup that rarely matches must not look as good as its matches.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from serve_app.contract import AcceptanceTally


@dataclass
class Tally:
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    # [p]: steps that asked for a draft token at position p, and drafts whose first p+1 tokens
    # were all accepted; their ratio is the acceptance at each depth, whatever k each step asked for.
    asked_per_position: list[int] = field(default_factory=list)
    accepted_per_position: list[int] = field(default_factory=list)

    def add(self, asked: int, proposed: int, accepted: int) -> None:
        """`drafts` and `draft_tokens` count what was proposed, as vLLM's own counters do."""
        self.drafts += proposed > 0
        self.draft_tokens += proposed
        self.accepted_tokens += accepted
        if len(self.asked_per_position) < asked:
            grow = [0] * (asked - len(self.asked_per_position))
            self.asked_per_position += grow
            self.accepted_per_position += grow
        for pos in range(asked):
            self.asked_per_position[pos] += 1
        for pos in range(accepted):
            self.accepted_per_position[pos] += 1


@dataclass
class AcceptanceBook:
    tallies: dict[tuple[str, str], Tally] = field(default_factory=lambda: defaultdict(Tally))
    # req_id -> (class, method, draft tokens asked for, draft tokens proposed) in the last step
    _pending: dict[str, tuple[str, str, int, int]] = field(default_factory=dict)

    def step(self, req_ids: list[str], sampled: list[list[int]], proposals: list[tuple[str, str, int, int]]) -> int:
        """Settle the previous step's drafts from what was sampled, then record this step's
        (class, method, k asked, tokens proposed) per row. Returns how many draft tokens this step verified."""
        pending, self._pending = self._pending, {}
        verified = 0
        for req_id, tokens, proposal in zip(req_ids, sampled, proposals):
            previous = pending.get(req_id)
            if previous is not None and tokens:
                request_class, method, asked, proposed = previous
                self.tallies[(request_class, method)].add(asked, proposed, min(len(tokens) - 1, proposed))
                verified += proposed
            elif previous is not None:
                self._pending[req_id] = previous  # not scheduled this step: settle later
            if proposal[2] > 0:
                self._pending[req_id] = proposal
        return verified

    def snapshot(self) -> list[AcceptanceTally]:
        return [
            AcceptanceTally(
                request_class=c,
                method=m,
                drafts=t.drafts,
                draft_tokens=t.draft_tokens,
                accepted_tokens=t.accepted_tokens,
                asked_per_position=list(t.asked_per_position),
                accepted_per_position=list(t.accepted_per_position),
            )
            for (c, m), t in sorted(self.tallies.items())
        ]
