"""The built test models meet what the app and benchmarks rely on (numbers measured by vLLM)."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from cluster.testmodels.build import DEFAULT_OUT


def _config(name: str) -> dict:
    return json.loads((DEFAULT_OUT / name / "config.json").read_text())


def test_draft_acceptance_and_cost_ratio(test_models):
    measured = test_models["measured"]
    assert measured["acceptance_rate"] >= 0.5
    assert measured["cost_ratio"] >= 8


def test_target_is_an_exact_expansion_of_the_trained_model(test_models):
    assert test_models["expansion_max_logit_error"] < 1e-4


def test_target_and_draft_share_one_tokenizer_and_head_dim(test_models):
    target, draft = _config("target"), _config("draft")
    assert target["vocab_size"] == draft["vocab_size"]
    assert (DEFAULT_OUT / "target/tokenizer.json").read_bytes() == (DEFAULT_OUT / "draft/tokenizer.json").read_bytes()
    for cfg in (target, draft):
        assert cfg["head_dim"] >= 32  # vLLM's CPU attention rejects 16


def test_tokenizer_has_a_chat_template(test_models):
    tok = AutoTokenizer.from_pretrained(DEFAULT_OUT / "target")
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_training_is_deterministic():
    import torch

    from cluster.testmodels.llama import Shape, new_model, train_lm

    sequences = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))

    def trained() -> dict:
        model = new_model(Shape(layers=1, hidden=64, intermediate=128), vocab_size=64, max_positions=64, seed=3)
        train_lm(model, sequences, steps=3, batch=4, lr=1e-3, seed=5)
        return model.state_dict()

    first, second = trained(), trained()
    assert all(torch.equal(first[k], second[k]) for k in first)
    fresh = new_model(Shape(layers=1, hidden=64, intermediate=128), vocab_size=64, max_positions=64, seed=3)
    assert not torch.equal(first["lm_head.weight"], fresh.state_dict()["lm_head.weight"])  # it did train
