"""Small Llama shapes and the function-preserving expansion of a trained one into a bigger one."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
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


def load_weights(model: LlamaForCausalLM, path) -> LlamaForCausalLM:
    """A state dict saved as safetensors (bf16 when shipped) into `model`, in fp32."""
    from safetensors.torch import load_file

    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return model


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
    for layer in model.model.layers[sc.num_hidden_layers :]:
        layer.input_layernorm.weight.fill_(norm_scale)
        layer.post_attention_layernorm.weight.fill_(norm_scale)
    return model
