"""The routed engine's local draft model, on the built draft checkpoint (CPU, no engine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serve_app.proposer.local_draft import LocalDraftModel


@pytest.fixture(scope="module")
def draft_dir(test_models) -> str:
    from cluster.testmodels.build import DEFAULT_OUT

    return str(DEFAULT_OUT / "draft")


@pytest.fixture(scope="module")
def greedy(draft_dir):
    """The Hugging Face model's greedy continuation with no cache at all: what drafts must equal."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(draft_dir, torch_dtype=torch.float32).eval()

    def continuation(context: np.ndarray, k: int) -> list[int]:
        ids = torch.as_tensor(context).unsqueeze(0)
        with torch.inference_mode():
            for _ in range(k):
                ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
        return ids[0, len(context) :].tolist()

    return continuation


def _tokens(*parts) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def test_drafts_are_the_models_greedy_tokens_for_every_row_of_a_batch(draft_dir, greedy):
    drafter = LocalDraftModel(draft_dir, torch.float32, "cpu", max_requests=4)
    contexts = [np.arange(10, 60), np.arange(300, 307), np.arange(900, 1000)]
    ks = [4, 2, 3]
    drafts = drafter.propose([(str(i), c, k) for i, (c, k) in enumerate(zip(contexts, ks))])
    assert drafts == [greedy(c, k) for c, k in zip(contexts, ks)]


def test_the_cache_follows_the_tokens_the_target_kept(draft_dir, greedy):
    """Two drafts accepted and the third replaced by the target's token; or every draft accepted
    and a bonus token after them: the next drafts continue from exactly that, as a cold model's."""
    drafter = LocalDraftModel(draft_dir, torch.float32, "cpu", max_requests=4)
    context = np.arange(100, 140)
    first_a, first_b = drafter.propose([("a", context, 4), ("b", context, 4)])
    corrected = _tokens(context, first_a[:2], [(first_a[2] + 1) % 2048])
    extended = _tokens(context, first_b, [7])
    assert drafter.propose([("a", corrected, 3), ("b", extended, 2)]) == [greedy(corrected, 3), greedy(extended, 2)]


def test_caches_of_requests_no_longer_scheduled_are_dropped_past_the_limit(draft_dir):
    drafter = LocalDraftModel(draft_dir, torch.float32, "cpu", max_requests=2)
    context = np.arange(5, 25)
    drafter.propose([("a", context, 1), ("b", context, 1)])
    drafter.keep_only({"b"})
    assert set(drafter._caches) == {"a", "b"}  # within the limit: a preempted request keeps its cache
    drafter.propose([("c", context, 1)])
    drafter.keep_only({"b", "c"})
    assert set(drafter._caches) == {"b", "c"}
