"""Training, distillation and function-preserving expansion of small Llama models."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

HEAD_DIM = 32  # vLLM's CPU attention rejects head_dim 16


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int

    def config(self, vocab_size: int, max_positions: int, rms_norm_eps: float = 1e-5) -> LlamaConfig:
        heads = self.hidden // HEAD_DIM
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=HEAD_DIM,
            max_position_embeddings=max_positions,
            rms_norm_eps=rms_norm_eps,
            tie_word_embeddings=False,
            torch_dtype="float32",
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=2,
        )


def new_model(shape: Shape, vocab_size: int, max_positions: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(shape.config(vocab_size, max_positions)).float()


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)


def _lr_at(step: int, steps: int, peak: float) -> float:
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _batches(sequences: torch.Tensor, batch: int, steps: int, seed: int):
    rng = random.Random(seed)
    for _ in range(steps):
        yield sequences[[rng.randrange(len(sequences)) for _ in range(batch)]]


def _train(model: LlamaForCausalLM, sequences: torch.Tensor, steps: int, batch: int, lr: float, seed: int,
           losses) -> float:
    """AdamW with warm-up and cosine decay; `losses(x)` gives (loss to minimise, loss to report).
    Returns the mean reported loss over the last tenth of the steps."""
    opt = _optimizer(model, lr)
    model.train()
    tail: list[float] = []
    for step, x in enumerate(_batches(sequences, batch, steps, seed)):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        loss, reported = losses(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= steps - max(1, steps // 10):
            tail.append(reported.item())
    model.eval()
    return sum(tail) / len(tail)


def train_lm(model: LlamaForCausalLM, sequences: torch.Tensor, steps: int, batch: int, lr: float, seed: int) -> float:
    """Next-token training; returns the final loss."""
    def losses(x):
        loss = model(input_ids=x, labels=x).loss
        return loss, loss

    return _train(model, sequences, steps, batch, lr, seed, losses)


def distill(student: LlamaForCausalLM, teacher: LlamaForCausalLM, sequences: torch.Tensor,
            steps: int, batch: int, lr: float, seed: int) -> float:
    """Train `student` to match `teacher`'s next-token distribution and its greedy choice.

    Greedy speculative decoding accepts a draft token when it equals the target's argmax, so
    the hard-label term on the teacher's argmax is what raises acceptance; the KL term gives
    the student the rest of the distribution to learn from. Returns the final hard-label loss.
    """
    def losses(x):
        with torch.no_grad():
            t_logits = teacher(input_ids=x).logits
        s_logits = student(input_ids=x).logits
        vocab = s_logits.shape[-1]
        kl = F.kl_div(F.log_softmax(s_logits, -1).view(-1, vocab), F.log_softmax(t_logits, -1).view(-1, vocab),
                      log_target=True, reduction="batchmean")
        hard = F.cross_entropy(s_logits.view(-1, vocab), t_logits.argmax(-1).view(-1))
        return kl + hard, hard

    return _train(student, sequences, steps, batch, lr, seed, losses)


@torch.no_grad()
def greedy_continuations(model: LlamaForCausalLM, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Prompts followed by the model's own greedy continuation (what a draft must predict)."""
    return model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=2)


@torch.no_grad()
def expand(small: LlamaForCausalLM, big: Shape) -> LlamaForCausalLM:
    """Embed `small` exactly into a wider, deeper model (Net2Net-style, function-preserving).

    The residual stream is zero-padded; RMSNorm weights are scaled by sqrt(h/H) and eps by h/H
    so normalisation over H dims of which only h are non-zero gives the same values; extra
    heads, MLP units and layers write zero into the residual stream.
    """
    sc = small.config
    h, H = sc.hidden_size, big.hidden
    cfg = big.config(sc.vocab_size, sc.max_position_embeddings, rms_norm_eps=sc.rms_norm_eps * h / H)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float()
    norm_scale = math.sqrt(h / H)
    i = sc.intermediate_size
    # Extra compute must still cost something, so unused weights keep their random init;
    # only the paths that would write into the residual stream are zeroed.
    model.model.embed_tokens.weight.zero_()[:, :h] = small.model.embed_tokens.weight
    model.lm_head.weight.zero_()[:, :h] = small.lm_head.weight
    model.model.norm.weight.zero_()[:h] = small.model.norm.weight * norm_scale
    for idx, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        attn.o_proj.weight.zero_()
        mlp.down_proj.weight.zero_()
        if idx >= sc.num_hidden_layers:
            continue
        src = small.model.layers[idx]
        for name in ("q_proj", "k_proj", "v_proj"):
            getattr(attn, name).weight[:h, :h] = getattr(src.self_attn, name).weight
            getattr(attn, name).weight[:, h:] = 0  # padded residual dims are zero anyway
        attn.o_proj.weight[:h, :h] = src.self_attn.o_proj.weight
        mlp.gate_proj.weight[:i, :h] = src.mlp.gate_proj.weight
        mlp.up_proj.weight[:i, :h] = src.mlp.up_proj.weight
        mlp.down_proj.weight[:h, :i] = src.mlp.down_proj.weight
        layer.input_layernorm.weight.zero_()[:h] = src.input_layernorm.weight * norm_scale
        layer.post_attention_layernorm.weight.zero_()[:h] = src.post_attention_layernorm.weight * norm_scale
    for layer in model.model.layers[sc.num_hidden_layers:]:
        layer.input_layernorm.weight.fill_(norm_scale)
        layer.post_attention_layernorm.weight.fill_(norm_scale)
    return model
