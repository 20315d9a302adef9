"""The spec tuner's arithmetic and decisions on synthetic statistics (the live k change is in
test_http), and its config checks."""

from __future__ import annotations

import asyncio
import copy
import random
import time

import pytest

from serve_app.config.schema import AppConfig
from serve_app.proposer.routed_proposer import probed_k
from serve_app.tuner.evidence import ReplicaTotals
from serve_app.tuner.goodput import AcceptanceEstimate, StepCost, choose_k, expected_tokens, fit_step_cost
from serve_app.tuner.spec_tuner import PoolTuner, SpecTuner
from tests.helpers import config_args, pool_of, validation_error

# A forward pass of 20 ms plus 1 ms per token; ngram drafting is free.
COST = StepCost(base_s=0.020, per_token_s=0.001, drafting={"ngram": (0.0, 0.0), "remote_draft": (0.004, 0.003)})


def _estimate(rates: list[float], drafts: int = 100) -> AcceptanceEstimate:
    """Drafts of len(rates) tokens where position p is reached and accepted with survival rates[p]."""
    estimate = AcceptanceEstimate()
    estimate.update([drafts] * len(rates), [round(drafts * r) for r in rates], memory_steps=1.0)
    return estimate


def test_expected_tokens_is_one_plus_the_survival_sum():
    survival = _estimate([0.8, 0.64, 0.51]).survival(3, min_drafts=20)
    assert survival == pytest.approx([0.8, 0.64, 0.51])
    assert expected_tokens(survival, 0) == 1
    assert expected_tokens(survival, 2) == pytest.approx(2.44)


def test_survival_beyond_the_measured_depth_keeps_the_last_conditional_rate():
    survival = _estimate([0.8, 0.6]).survival(4, min_drafts=20)
    assert survival == pytest.approx([0.8, 0.6, 0.45, 0.3375])
    # A position few drafts reached is not trusted: it is extrapolated like an unmeasured one.
    estimate = _estimate([0.8, 0.6])
    estimate.update([0, 0, 5], [0, 0, 5], memory_steps=100)
    assert estimate.survival(3, min_drafts=20)[2] == pytest.approx(0.45)
    assert AcceptanceEstimate().survival(4, min_drafts=20) is None


def test_estimate_forgets_the_past_by_evidence_not_by_time():
    estimate = _estimate([0.9])
    # One request's worth of steps whose drafts all failed barely moves an estimate of 150 steps...
    estimate.update([20], [0], memory_steps=150)
    assert estimate.survival(1, min_drafts=20)[0] == pytest.approx(0.9 * 0.875 * 100 / (0.875 * 100 + 20), abs=0.01)
    assert estimate.survival(1, min_drafts=20)[0] > 0.7
    # ...while a few hundred such steps replace it.
    for _ in range(6):
        estimate.update([100], [10], memory_steps=150)
    assert estimate.survival(1, min_drafts=20)[0] == pytest.approx(0.1, abs=0.02)


def _period(rng: random.Random, rate: float, steps: int, k: int = 4) -> tuple[list[int], list[int]]:
    """One period's per-position counts: `steps` drafts of k tokens, each token accepted with `rate`."""
    asked, accepted = [steps] * k, [0] * k
    for _ in range(steps):
        for pos in range(k):
            if rng.random() >= rate:
                break
            accepted[pos] += 1
    return asked, accepted


def test_a_shift_in_acceptance_restarts_the_estimate_within_a_period_or_two():
    rng = random.Random(3)
    estimate = AcceptanceEstimate()
    for _ in range(20):  # greedy code edits: drafts accepted
        assert not estimate.update(*_period(rng, 0.9, 32), memory_steps=150, min_drafts=20, shift_threshold=0.3)
    shifted = [
        estimate.update(*_period(rng, 0.1, 32), memory_steps=150, min_drafts=20, shift_threshold=0.3) for _ in range(3)
    ]  # sampled chat: drafts rejected
    assert shifted[:2] in ([True, False], [False, True])
    # The new regime's deeper positions too: the old one's do not stretch the new first-position rate.
    assert estimate.survival(4, min_drafts=20)[0] < 0.3 and estimate.survival(4, min_drafts=20)[3] < 0.01
    # Without the shift test, the long memory alone takes far longer.
    slow = AcceptanceEstimate()
    for rate in [0.9] * 20 + [0.1] * 2:
        slow.update(*_period(rng, rate, 32), memory_steps=150)
    assert slow.survival(4, min_drafts=20)[0] > 0.5


def test_noise_within_a_workload_is_not_a_shift():
    """Requests differ (some drafts run 70% accepted, some 98%): the long estimate averages them
    and no period's pair of requests restarts it."""
    rng = random.Random(5)
    estimate = AcceptanceEstimate()
    shifts = 0
    for _ in range(500):
        counts = [_period(rng, rng.uniform(0.7, 0.98), 16) for _ in range(2)]  # two requests per period
        asked = [a + b for a, b in zip(counts[0][0], counts[1][0])]
        accepted = [a + b for a, b in zip(counts[0][1], counts[1][1])]
        shifts += estimate.update(asked, accepted, memory_steps=150, min_drafts=20, shift_threshold=0.3)
    assert shifts == 0


def test_goodput_picks_long_drafts_when_they_are_accepted_and_cheap():
    survival = _estimate([0.95] * 8).survival(8, 20)
    choice = choose_k(survival, COST, rows=1, method="ngram", k_min=0, k_max=8, current=None, margin=0)
    assert choice.k == 8
    # Goodput is expected tokens over the cost of the step with that k.
    assert choice.goodput[2] == pytest.approx((1 + 0.95 + 0.95) / (0.020 + 0.001 * 3))


def test_k_is_zero_below_break_even():
    """With a 3 ms draft token and a 20 ms step, one draft pays only above ~20% acceptance."""
    expensive = StepCost(0.020, 0.0, {"remote_draft": (0.0, 0.005)})
    for rate, expected in ((0.15, 0), (0.6, None)):
        survival = _estimate([rate ** (p + 1) for p in range(4)]).survival(4, 20)
        choice = choose_k(survival, expensive, rows=1, method="remote_draft", k_min=0, k_max=4, current=3, margin=0)
        assert (choice.k == 0) == (expected == 0), choice


def test_bigger_batches_get_shorter_drafts():
    """Verification tokens cost the whole batch: the best k falls as the batch grows."""
    survival = _estimate([0.7 ** (p + 1) for p in range(8)]).survival(8, 20)
    ks = [
        choose_k(survival, COST, rows=rows, method="ngram", k_min=0, k_max=8, current=None, margin=0).k
        for rows in (1, 8, 64)
    ]
    assert ks[0] > ks[1] > ks[2], ks


def test_no_flapping_near_a_boundary():
    """Survival jittering around the point where k=3 and k=4 tie: the margin keeps k still."""
    rng = random.Random(1)
    cost = StepCost(0.020, 0.002, {"ngram": (0.0, 0.0)})
    k, changes = 3, 0
    for _ in range(200):
        base = 0.62 + rng.uniform(-0.01, 0.01)
        survival = [base ** (p + 1) for p in range(8)]
        new = choose_k(survival, cost, rows=4, method="ngram", k_min=0, k_max=8, current=k, margin=0.03).k
        changes += new != k
        k = new
    assert changes <= 1


def test_one_noisy_cost_fit_does_not_move_k():
    """A cost fit that, once, makes drafting look ten times dearer is outvoted by the smoothed past."""
    survival = [0.9 ** (p + 1) for p in range(8)]
    steady = choose_k(survival, COST, rows=1, method="ngram", k_min=0, k_max=8, current=None, margin=0.05)
    spike = StepCost(0.020, 0.010, {"ngram": (0.0, 0.0)})
    alone = choose_k(survival, spike, rows=1, method="ngram", k_min=0, k_max=8, current=steady.k, margin=0.05)
    smoothed = choose_k(
        survival,
        spike,
        rows=1,
        method="ngram",
        k_min=0,
        k_max=8,
        current=steady.k,
        margin=0.05,
        previous=steady.goodput,
        smoothing=0.3,
    )
    assert alone.k < steady.k == smoothed.k


def test_step_cost_fit_recovers_a_linear_cost_and_ignores_stalls():
    rng = random.Random(0)
    steps = []
    for _ in range(200):
        rows, verified = rng.randint(2, 8), rng.randint(0, 20)
        steps.append(
            {
                "rows": rows,
                "verified_tokens": verified,
                "forward_s": 0.02 + 0.001 * (rows + verified) + rng.uniform(-0.0005, 0.0005),
            }
        )
    for i in range(0, 200, 10):
        steps[i]["forward_s"] = 1.5  # GC pauses and co-tenants: 5% of steps stall
    drafts = [{"method": "remote_draft", "rows": 4, "k": k, "seconds": 0.004 + 0.003 * k} for k in (2, 3, 4) * 5]
    drafts[0]["seconds"] = 2.0
    cost = fit_step_cost(steps, drafts, rows=4, draft_rows={"remote_draft": 4})
    assert cost.base_s == pytest.approx(0.02, abs=0.002)
    assert cost.per_token_s == pytest.approx(0.001, abs=0.0002)
    assert cost.drafting["remote_draft"] == pytest.approx((0.004, 0.003))
    # Drafting seen at one k only: its cost per k is unknown, so the method is not costed (probing
    # at k+-1 spreads it); the same for forward passes that all verified as many tokens.
    one_k = [{"method": "ngram", "rows": 4, "k": 4, "seconds": 0.001}] * 30
    assert "ngram" not in fit_step_cost(steps, one_k, rows=4, draft_rows={"ngram": 4}).drafting
    same_tokens = [{"rows": 1, "verified_tokens": 4, "forward_s": 0.03}] * 50
    assert fit_step_cost(same_tokens, drafts, rows=1, draft_rows={}) is None
    assert fit_step_cost(steps[:5], drafts, rows=4, draft_rows={}) is None
    # A fit whose intercept would be negative goes through the origin instead.
    through_origin = fit_step_cost(
        [{"rows": 1, "verified_tokens": v, "forward_s": 0.01 * v - 0.005} for v in (1, 2, 3) * 10],
        drafts,
        rows=1,
        draft_rows={},
    )
    assert through_origin.base_s == 0 and through_origin.per_token_s > 0


def test_step_cost_is_fit_at_the_current_batch_size():
    # A remote draft call of 16 rows has a far larger fixed cost than one of 1 row; a line through
    # both sizes reads it as almost nothing, and then short drafts look cheap under load.
    def call_s(rows: int, k: int) -> float:
        return 0.005 + 0.004 * rows + (0.002 + 0.0003 * rows) * k

    drafts = [
        {"method": "remote_draft", "rows": rows, "k": k, "seconds": call_s(rows, k)}
        for rows, ks in ((1, (6, 7, 8)), (16, (1, 2, 3)))
        for k in ks * 10
    ]
    steps = [
        {"rows": rows, "verified_tokens": rows * k, "forward_s": 0.01 + 0.002 * rows * (1 + k)}
        for rows in (1, 16)
        for k in (1, 2, 3) * 10
    ]
    for rows in (1, 16):
        cost = fit_step_cost(steps, drafts, rows=rows, draft_rows={"remote_draft": rows})
        assert cost.drafting["remote_draft"] == pytest.approx((call_s(rows, 0), call_s(rows, 1) - call_s(rows, 0)))
        assert (cost.base_s, cost.per_token_s) == pytest.approx((0.01, 0.002))
    # Calls of a size never seen are not costed: k stays rather than follow another size's cost.
    assert fit_step_cost(steps, drafts, rows=1, draft_rows={"remote_draft": 6}).drafting == {}


def test_a_drafting_call_is_charged_to_every_row_that_waits_for_it():
    # Sixteen rows in the batch; the draft model drafts for two of them, prompt lookup for fourteen.
    steps = [{"rows": 16, "verified_tokens": 16 * k, "forward_s": 0.02 + 0.001 * 16 * (1 + k)} for k in (1, 2, 3) * 10]
    drafts = [
        {"method": m, "rows": rows, "k": k, "seconds": fixed + per_k * k}
        for m, rows, fixed, per_k in (("local_draft", 2, 0.004, 0.002), ("ngram", 14, 0.0002, 0.0))
        for k in (2, 3, 4) * 10
    ]
    cost = fit_step_cost(steps, drafts, rows=16, draft_rows={"local_draft": 2, "ngram": 14})
    assert cost.waiting == pytest.approx({"local_draft": 8.0, "ngram": 16 / 14})
    forward = 0.02 + 0.001 * 16 * 5
    assert cost.seconds(16, "local_draft", 4) == pytest.approx(forward + 8 * (0.004 + 0.002 * 4))
    # Drafting for every row of the batch, a call holds up only the rows it drafted for.
    every_row = [{**d, "rows": 16} for d in drafts if d["method"] == "local_draft"]
    assert fit_step_cost(steps, every_row, rows=16, draft_rows={"local_draft": 16}).waiting == {"local_draft": 1.0}

    # A chat class: the draft model is accepted far more often than prompt lookup. Alone the draft
    # model gives it more tokens per second; drafting for 2 rows of 16, it costs the batch more.
    local, lookup = [0.8, 0.64, 0.51, 0.41], [0.5, 0.25, 0.125, 0.06]
    drafting = {"local_draft": (0.004, 0.002), "ngram": (0.0002, 0.0)}

    def best(rows: float, waiting: dict[str, float]) -> str:
        cost = StepCost(0.02, 0.001, drafting, waiting)
        goodput = {
            m: expected_tokens(s, 4) / cost.seconds(rows, m, 4) for m, s in (("local_draft", local), ("ngram", lookup))
        }
        return max(goodput, key=goodput.get)

    assert best(1, {}) == "local_draft"
    assert best(16, {"local_draft": 8.0, "ngram": 16 / 14}) == "ngram"
    assert best(16, {}) == "local_draft"  # what one request's own step time would say


def test_probes_spread_k_so_acceptance_and_cost_around_it_stay_measured():
    rng = random.Random(0)
    for k, seen in ((5, {4, 5, 6}), (0, {0, 1, 2}), (8, {7, 8})):
        assert {probed_k(k, 0.5, 8, rng) for _ in range(200)} == seen
    assert {probed_k(5, 0.0, 8, rng) for _ in range(200)} == {5}


def _routed_tuner(**tuner) -> PoolTuner:
    args = copy.deepcopy(config_args())
    pool_of(args, "routed")["speculation"]["tuner"] = {"period_s": 5, "min_dwell_s": 20, **tuner}
    model = AppConfig.model_validate(args).models[0]
    return PoolTuner(model, model.pool("routed"), now=0.0)


def _report(tallies: dict, rows: int, verified: int, forward_s: float) -> dict:
    return {
        "tallies": [
            {"request_class": c, "method": m, "drafts": p[0], "asked_per_position": p, "accepted_per_position": a}
            for (c, m), (p, a) in tallies.items()
        ],
        "steps": [
            {"rows": rows, "verified_tokens": v, "forward_s": forward_s + 0.0005 * (rows + v)}
            for v in (verified, verified + rows) * 20
        ],
        "drafts": [{"method": "ngram", "rows": rows, "k": k, "seconds": 0.0002} for k in (3, 4, 5) * 3],
    }


def test_pool_tuner_follows_acceptance_with_a_dwell_time_and_bounds():
    tuner = _routed_tuner(classes={"chat": {"k_max": 6}, "agentic": {"enabled": False}})
    keys = {(c, m): k for c, m, k, _ in tuner.table()}
    assert keys[("code_edit", "ngram")] == 5  # the class's configured k to start with
    assert keys[("chat", "remote_draft")] == 6 and ("agentic", "ngram") not in keys  # clamped to k_max
    totals = {"code": ([0] * 8, [0] * 8)}

    def period(now: float, rate: float) -> list:
        p, a = totals["code"]
        p[:] = [x + 200 for x in p]
        a[:] = [x + round(200 * rate ** (i + 1)) for i, x in enumerate(a)]
        tuner.ingest(
            "r1", _report({("code_edit", "ngram"): (list(p), list(a))}, rows=2, verified=8, forward_s=0.02), now
        )
        return tuner.decide(now)

    assert period(5, 0.95) == []  # within the dwell time of the start
    assert period(25, 0.95) == [("code_edit", "ngram", 5, 8)]
    # Idle periods (no reports) neither change k nor wear the estimate down.
    survival = tuner.keys[("code_edit", "ngram")].estimate.survival(8, 20)
    assert [tuner.decide(t) for t in (27, 29, 31)] == [[], [], []]
    assert tuner.keys[("code_edit", "ngram")].estimate.survival(8, 20) == survival
    # Acceptance collapses: k drops to 0, but not before the dwell time since the last change.
    assert period(30, 0.01) == []
    changes = [c for t in range(35, 80, 5) for c in period(t, 0.01)]
    assert changes == [("code_edit", "ngram", 8, 0)]
    # At k=0 probes are the class's only evidence that drafting pays again: it is probed more often.
    assert ("code_edit", "ngram", 0, 0.2) in tuner.table() and ("chat", "ngram", 6, 0.1) in tuner.table()
    assert tuner.keys[("code_edit", "ngram")].last["survival"][0] < 0.1

    # An operator's pin holds k whatever the estimate, and is not probed around.
    # The pin's move is a change of k like the tuner's own (the dashboard counts both).
    assert tuner.pin("code_edit", "ngram", 3, now=80) == [("code_edit", "ngram", 0, 3)]
    assert [c for t in range(85, 150, 5) for c in period(t, 0.95)] == []
    assert ("code_edit", "ngram", 3, 0.0) in tuner.table()
    assert tuner.pin("code_edit", "ngram", None, now=150) == []
    assert [c for t in range(155, 200, 5) for c in period(t, 0.95)] == [("code_edit", "ngram", 3, 8)]
    with pytest.raises(ValueError, match="k must be from 0 to 8"):
        tuner.pin("code_edit", "ngram", 9, now=200)


def test_an_idle_class_keeps_its_k_while_other_classes_load_the_pool():
    tuner = _routed_tuner(min_dwell_s=0)
    chat, code = ("chat", "ngram"), ("code_edit", "ngram")
    totals = {key: ([0] * 8, [0] * 8) for key in (chat, code)}

    def period(now: float, keys: tuple, rows: int) -> list:
        for key in keys:
            p, a = totals[key]
            p[:] = [x + 200 for x in p]
            a[:] = [x + round(200 * 0.8 ** (i + 1)) for i, x in enumerate(a)]
        tallies = {key: (list(totals[key][0]), list(totals[key][1])) for key in keys}
        tuner.ingest("r1", _report(tallies, rows=rows, verified=8, forward_s=0.02), now)
        return [change for change in tuner.decide(now) if change[:2] == chat]

    assert [c for t in (5, 10) for c in period(t, (chat, code), rows=1)] == []  # long drafts pay at 1 row
    assert tuner.keys[chat].k == 8
    # Code edits alone at 16 rows a step: chat is not re-judged on a batch it is not in...
    assert [c for t in range(15, 50, 5) for c in period(t, (code,), rows=16)] == []
    # ...until its own requests run at that batch size, where shorter drafts pay.
    assert [c for t in range(50, 70, 5) for c in period(t, (chat, code), rows=16)] == [("chat", "ngram", 8, 3)]


def test_a_new_batch_size_is_judged_on_its_own_goodput_not_blended_with_the_old_ones():
    """Smoothing averages noisy fits at one load; when the load moves, the old load's goodput
    curve would hold k at its old best for several periods."""
    tuner = _routed_tuner(min_dwell_s=0, smoothing=0.2)
    chat = ("chat", "ngram")
    asked, accepted = [0] * 8, [0] * 8

    def period(now: float, rows: int) -> list:
        asked[:] = [x + 200 for x in asked]
        accepted[:] = [x + round(200 * 0.8 ** (i + 1)) for i, x in enumerate(accepted)]
        tuner.ingest("r1", _report({chat: (list(asked), list(accepted))}, rows=rows, verified=8, forward_s=0.02), now)
        return [change for change in tuner.decide(now) if change[:2] == chat]

    assert [c for t in range(5, 30, 5) for c in period(t, rows=1)] == []
    assert tuner.keys[chat].k == 8
    # 16 rows a step from t=30: the drafting cost is known there from the second period on, and
    # that first decision at 16 rows moves k.
    assert [period(t, rows=16) for t in (30, 35)] == [[], [("chat", "ngram", 8, 3)]]


def test_tuner_config_is_validated():
    args = copy.deepcopy(config_args())
    pool_of(args, "eagle3")["speculation"]["tuner"] = {}
    assert "models.0.pools.0.speculation: tuner applies to method 'routed' only" in validation_error(args)
    args = copy.deepcopy(config_args())
    pool_of(args, "routed")["speculation"]["tuner"] = {"classes": {"poetry": {}}}
    assert "['poetry'] are not request classes" in validation_error(args)
    pool_of(args, "routed")["speculation"]["tuner"] = {"classes": {"chat": {"k_min": 4, "k_max": 2}}}
    assert "k_min (4) > k_max (2)" in validation_error(args)
    pool_of(args, "routed")["speculation"]["tuner"] = {"classes": {"chat": {"k_max": 12}}}
    assert "at most num_speculative_tokens (8)" in validation_error(args)
    pool_of(args, "routed")["speculation"]["tuner"] = {"period_s": 0}
    assert "period_s" in validation_error(args)


def test_in_engine_k_schedule_is_checked_with_vllms_own_rules():
    args = copy.deepcopy(config_args())
    pool_of(args, "eagle3")["speculation"]["options"] = {"num_speculative_tokens_per_batch_size": [[2, 8, 4]]}
    assert "must start at 1" in validation_error(args)
    pool_of(args, "eagle3")["speculation"]["options"] = {"num_speculative_tokens_per_batch_size": [[1, 8, 9]]}
    assert "ask for more than num_speculative_tokens (4)" in validation_error(args)


def test_a_restarted_replica_is_counted_afresh_even_when_its_lookups_never_matched():
    tuner = _routed_tuner()
    key = ("code_edit", "ngram")

    def report(asked: int) -> dict:
        return {
            "tallies": [
                {
                    "request_class": key[0],
                    "method": key[1],
                    "drafts": 0,
                    "draft_tokens": 0,
                    "accepted_tokens": 0,
                    "asked_per_position": [asked],
                    "accepted_per_position": [0],
                }
            ],
            "steps": [],
            "drafts": [],
        }

    tuner.ingest("r1", report(10), now=1.0)
    tuner.ingest("r1", report(4), now=2.0)  # totals went down: the replica restarted
    assert tuner.keys[key].new_asked == [14]


MODEL = "llama-3.3-70b-instruct"


def test_the_tuner_routes_each_class_to_the_method_its_evidence_favours():
    """Synthetic reports from both kinds of pool: the routed pool's proposer books (code edits copy,
    chat does not) and the in-engine eagle3 pool's step times and per-class draft counts (chat
    accepts). Code edits go to ngram, chat to eagle3, and the table says why."""

    async def scenario() -> tuple[dict, dict]:
        args = copy.deepcopy(config_args())
        pool_of(args, "routed")["speculation"]["tuner"] = {"period_s": 5}
        tuner = SpecTuner(AppConfig.model_validate(args))
        routed = _report(
            {
                ("code_edit", "ngram"): ([400] * 5, [round(400 * 0.9 ** (i + 1)) for i in range(5)]),
                ("chat", "ngram"): ([400] * 5, [round(400 * 0.2 ** (i + 1)) for i in range(5)]),
            },
            rows=1,
            verified=4,
            forward_s=0.02,
        )
        await tuner.report(MODEL, "routed", "r1", routed)
        eagle = {
            "tallies": [
                {
                    "request_class": "chat",
                    "asked_per_position": [400] * 5,
                    "accepted_per_position": [round(400 * 0.8 ** (i + 1)) for i in range(5)],
                },
                {
                    "request_class": "code_edit",
                    "asked_per_position": [400] * 5,
                    "accepted_per_position": [round(400 * 0.3 ** (i + 1)) for i in range(5)],
                },
            ],
            "steps": [{"rows": 1, "seconds": 0.026}] * 40,
        }
        await tuner.report_engine(MODEL, "eagle3", "e1", eagle)
        await tuner.report_engine(MODEL, "plain", "p1", {"tallies": [], "steps": [{"rows": 1, "seconds": 0.021}] * 40})
        now = time.monotonic()
        tuner._pools[(MODEL, "routed")].decide(now)
        for engine in tuner._engines.values():
            engine.update(now)
        tuner._plan(tuner._routed_models[0], now)
        tuner._loop.cancel()
        return await tuner.routing_table(), await tuner.router_state()

    table, state = asyncio.run(scenario())
    model = table[MODEL]
    assert model["code_edit"]["method"] == "ngram" and model["chat"]["method"] == "eagle3"
    assert sum(model["chat"]["explore"].values()) == pytest.approx(0.05)
    options = state[MODEL]["chat"]["options"]
    assert options["eagle3"]["goodput"] > options["none"]["goodput"] > 0
    assert options["eagle3"]["evidence"]["drafts"] > 0 and options["none"]["pool"] == "plain"


def test_acceptance_sums_each_replicas_latest_books_by_vllms_definitions():
    totals = ReplicaTotals()
    routed = {"request_class": "chat", "method": "ngram", "drafts": 10, "draft_tokens": 40, "accepted_tokens": 20}
    routed |= {"asked_per_position": [12, 12, 12, 12], "accepted_per_position": [9, 6, 3, 2]}
    totals.increments("r1", ("chat", "ngram"), routed)
    totals.increments("r2", ("chat", "ngram"), {**routed, "drafts": 30, "draft_tokens": 120, "accepted_tokens": 60})
    # A fixed-method pool's class share: vLLM's per-position counts (position 0 counts the drafts).
    totals.increments(
        "r1",
        ("code_edit",),
        {"request_class": "code_edit", "asked_per_position": [5.0, 5.0], "accepted_per_position": [4.0, 2.0]},
    )
    summary = totals.acceptance()
    chat = summary[("chat", "ngram")]
    assert (chat.drafts, chat.draft_tokens, chat.accepted_tokens) == (40, 160, 80)
    assert chat.acceptance_rate == 0.5 and chat.mean_acceptance_length == 3.0
    code = summary[("code_edit",)]
    assert (code.drafts, code.draft_tokens, code.accepted_tokens) == (5, 10, 6)
    assert code.mean_acceptance_length == pytest.approx(2.2)
