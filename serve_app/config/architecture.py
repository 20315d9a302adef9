"""Model shapes that config validation and placement arithmetic need, without loading weights.

A shape comes from the config (`architecture:`), else from a local checkpoint's config.json,
else from the catalogue of well-known hub models below (no hub is contacted: production
configs must validate on a machine that cannot download them).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    # Set when the formula below does not describe the model (e.g. EAGLE heads).
    num_params: float | None = None
    # Set when the output head predicts over fewer tokens than the tokenizer has (EAGLE-3 heads
    # map a reduced draft vocabulary back to the target's).
    head_vocab_size: int | None = Field(None, ge=1)

    def output_vocab(self) -> int:
        return self.head_vocab_size or self.vocab_size

    def param_count(self) -> float:
        if self.num_params is not None:
            return self.num_params
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * self.num_attention_heads * self.head_dim * 2 + h * kv * 2
        mlp = 3 * h * self.intermediate_size
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_layers * (attn + mlp + 2 * h) + h

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel_size: int) -> float:
        """KV-cache bytes one token costs on each GPU of a TP group (KV heads are split, or
        replicated when there are fewer of them than ranks)."""
        heads_per_rank = max(1.0, self.num_kv_heads / tensor_parallel_size)
        return 2 * self.num_layers * heads_per_rank * self.head_dim * dtype_bytes


_LLAMA_70B = Architecture(
    num_layers=80,
    hidden_size=8192,
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=28672,
    vocab_size=128256,
)
_LLAMA_8B = Architecture(
    num_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=14336,
    vocab_size=128256,
)
_LLAMA_1B = Architecture(
    num_layers=16,
    hidden_size=2048,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=64,
    intermediate_size=8192,
    vocab_size=128256,
    tie_word_embeddings=True,
)
# One EAGLE-3 decoder layer over 2x hidden inputs, its fusion layer and a 32k draft lm_head.
_EAGLE3_70B = Architecture(
    num_layers=1,
    hidden_size=8192,
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=28672,
    vocab_size=128256,
    num_params=1.40e9,
    head_vocab_size=32000,
)

KNOWN_ARCHITECTURES: dict[str, Architecture] = {
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA_70B,
    "meta-llama/Llama-3.3-70B-Instruct": _LLAMA_70B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA_8B,
    "meta-llama/Llama-3.2-1B-Instruct": _LLAMA_1B,
    "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B": _EAGLE3_70B,
}


def resolve_source(source: str) -> str:
    """A local checkpoint path made absolute (relative paths are from the project root);
    anything else (a hub id) is returned unchanged."""
    if source.startswith("/"):
        return source
    local = PROJECT_ROOT / source
    return str(local) if source.startswith(".") or local.exists() else source


def from_hf_config(cfg: dict) -> Architecture:
    heads = cfg["num_attention_heads"]
    return Architecture(
        num_layers=cfg["num_hidden_layers"],
        hidden_size=cfg["hidden_size"],
        num_attention_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads", heads),
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate_size=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
    )


def resolve_architecture(source: str) -> Architecture | None:
    config_json = Path(resolve_source(source)) / "config.json"
    if config_json.is_file():
        return from_hf_config(json.loads(config_json.read_text()))
    return KNOWN_ARCHITECTURES.get(source)
