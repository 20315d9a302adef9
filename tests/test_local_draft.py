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
    drafter = LocalDraftModel(draft_dir, torch.float32, "cpu")
    contexts = [np.arange(10, 60), np.arange(300, 307), np.arange(900, 1000)]
    ks = [4, 2, 3]
    drafts = drafter.propose([(str(i), c, k) for i, (c, k) in enumerate(zip(contexts, ks))])
    assert drafts == [greedy(c, k) for c, k in zip(contexts, ks)]


def test_the_cache_follows_the_tokens_the_target_kept(draft_dir, greedy):
    """Two drafts accepted and the third replaced by the target's token; or every draft accepted
    and a bonus token after them: the next drafts continue from exactly that, as a cold model's."""
    drafter = LocalDraftModel(draft_dir, torch.float32, "cpu")
    context = np.arange(100, 140)
    first_a, first_b = drafter.propose([("a", context, 4), ("b", context, 4)])
    corrected = _tokens(context, first_a[:2], [(first_a[2] + 1) % 2048])
    extended = _tokens(context, first_b, [7])
    assert drafter.propose([("a", corrected, 3), ("b", extended, 2)]) == [greedy(corrected, 3), greedy(extended, 2)]


def test_caches_live_only_while_their_request_is_scheduled(draft_dir):
    drafter = LocalDraftModel(draft_dir, torch.float32, "cpu")
    context = np.arange(5, 25)
    drafter.propose([("a", context, 1), ("b", context, 1)])
    drafter.keep_only({"b", "c"})  # "a" finished; "b" ran without drafting this step
    assert set(drafter._caches) == {"b"}


def test_the_routed_proposer_drafts_each_row_by_its_method(draft_dir, greedy):
    """One step of four rows: ngram_or_draft with a prompt-lookup match takes the lookup's draft,
    without one the draft model's; local_draft always the model's; none nothing."""
    from types import SimpleNamespace

    from serve_app.proposer.request_spec import RequestSpec
    from serve_app.proposer.routed_proposer import RoutedProposer

    config = SimpleNamespace(
        speculative_config=SimpleNamespace(num_speculative_tokens=4, prompt_lookup_min=2, prompt_lookup_max=3),
        model_config=SimpleNamespace(max_model_len=256, dtype=torch.float32),
        scheduler_config=SimpleNamespace(max_num_seqs=4),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    methods = {"matched": "ngram_or_draft", "unmatched": "ngram_or_draft", "local": "local_draft", "plain": "none"}
    runner = SimpleNamespace(
        device="cpu",
        input_batch=SimpleNamespace(req_ids=list(methods)),
        requests={
            req: SimpleNamespace(sampling_params=SimpleNamespace(extra_args=RequestSpec(m, 3, "chat").to_xargs()))
            for req, m in methods.items()
        },
    )
    proposer = RoutedProposer(config)
    proposer.attach(runner, local_draft=draft_dir)
    contexts = {
        "matched": [40, 41, 42, 43, 44, 45, 40, 41, 42],  # ...40 41 42 was followed by 43 44 45
        "unmatched": list(range(500, 520)),
        "local": list(range(700, 730)),
        "plain": list(range(900, 910)),
    }
    tokens = np.zeros((4, 256), dtype=np.int64)
    for i, ids in enumerate(contexts.values()):
        tokens[i, : len(ids)] = ids
    lengths = np.array([len(ids) for ids in contexts.values()])
    drafts = proposer.propose([[ids[-1]] for ids in contexts.values()], lengths, tokens)
    assert drafts == [
        [43, 44, 45],
        greedy(np.array(contexts["unmatched"]), 3),
        greedy(np.array(contexts["local"]), 3),
        [],
    ]
    # The drafting call was timed for both methods that drafted with the model.
    assert {d["method"] for d in proposer.timings()["drafts"]} == {"ngram", "ngram_or_draft", "local_draft"}
