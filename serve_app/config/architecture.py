"""Model shapes that config validation and placement arithmetic need, without loading weights.

A shape comes from the config (`architecture:`), else from the model's config.json where users
expect it: a local checkpoint, the local Hugging Face cache, the hub (one short try; an
unreachable hub is not asked again in the same process, and HF_HUB_OFFLINE=1 skips it), and
last the catalogue of well-known hub models below, so production configs still validate on a
machine that cannot reach the hub.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import httpx
from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils import build_hf_headers
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

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
    # Llama, Qwen, Gemma and Mistral gate their MLP (three matrices); OPT and GPT-2 do not (two).
    gated_mlp: bool = True
    # False for drafters without attention (MLP speculators): they hold no KV cache.
    kv_cache: bool = True

    def output_vocab(self) -> int:
        return self.head_vocab_size or self.vocab_size

    def param_count(self) -> float:
        if self.num_params is not None:
            return self.num_params
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * self.num_attention_heads * self.head_dim * 2 + h * kv * 2
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate_size
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_layers * (attn + mlp + 2 * h) + h

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel_size: int) -> float:
        """KV-cache bytes one token costs on each GPU of a TP group (KV heads are split, or
        replicated when there are fewer of them than ranks)."""
        if not self.kv_cache:
            return 0.0
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

# One Llama-3-8B decoder layer, the fc over [hidden state, embedding] and an embedding table of
# its own (an upper bound: vLLM may share the target's); the target's lm_head is shared.
_EAGLE_8B = _LLAMA_8B.model_copy(update={"num_layers": 1, "num_params": 0.78e9})
# ibm-fms/llama3-70b-accelerator's config.json: emb_dim = inner_dim = 8192, n_predict 4 and
# tie_weights, so its four stages share one embedding, one head and the inner projection:
# 2 x 128256 x 8192 + 2 x 8192^2 = 2.24e9 parameters, and no attention.
_MLP_SPECULATOR_70B = Architecture(
    num_layers=1,
    hidden_size=8192,
    num_attention_heads=1,
    num_kv_heads=1,
    head_dim=8192,
    intermediate_size=8192,
    vocab_size=128256,
    num_params=2.24e9,
    kv_cache=False,
)


def _opt(num_layers: int, hidden_size: int, num_heads: int) -> Architecture:
    """OPT: no grouped KV heads, a 4x ungated MLP, tied embeddings, a 50,272-token vocabulary."""
    return Architecture(
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        num_kv_heads=num_heads,
        head_dim=hidden_size // num_heads,
        intermediate_size=4 * hidden_size,
        vocab_size=50272,
        tie_word_embeddings=True,
        gated_mlp=False,
    )


# Published config.json shapes of the models the example recipes use (configs/examples/).
_QWEN3 = dict(num_attention_heads=32, num_kv_heads=8, head_dim=128, vocab_size=151936)
_GEMMA2 = dict(head_dim=256, vocab_size=256000, tie_word_embeddings=True)

KNOWN_ARCHITECTURES: dict[str, Architecture] = {
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA_70B,
    "meta-llama/Llama-3.3-70B-Instruct": _LLAMA_70B,
    "meta-llama/Meta-Llama-3-70B-Instruct": _LLAMA_70B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA_8B,
    "meta-llama/Llama-3.2-1B-Instruct": _LLAMA_1B,
    "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B": _EAGLE3_70B,
    "yuhuili/EAGLE-LLaMA3-Instruct-8B": _EAGLE_8B,
    "ibm-fms/llama3-70b-accelerator": _MLP_SPECULATOR_70B,
    "Qwen/Qwen3-8B": Architecture(num_layers=36, hidden_size=4096, intermediate_size=12288, **_QWEN3),
    "Qwen/Qwen3-0.6B": Architecture(
        num_layers=28, hidden_size=1024, intermediate_size=3072, tie_word_embeddings=True, **_QWEN3
    ).model_copy(update={"num_attention_heads": 16}),
    "facebook/opt-6.7b": _opt(num_layers=32, hidden_size=4096, num_heads=32),
    "facebook/opt-125m": _opt(num_layers=12, hidden_size=768, num_heads=12),
    "google/gemma-2-9b-it": Architecture(
        num_layers=42, hidden_size=3584, num_attention_heads=16, num_kv_heads=8, intermediate_size=14336, **_GEMMA2
    ),
    "google/gemma-2-2b-it": Architecture(
        num_layers=26, hidden_size=2304, num_attention_heads=8, num_kv_heads=4, intermediate_size=9216, **_GEMMA2
    ),
}


def resolve_source(source: str) -> str:
    """A local checkpoint path made absolute (relative paths are from the project root);
    anything else (a hub id) is returned unchanged."""
    if source.startswith("/"):
        return source
    local = PROJECT_ROOT / source
    return str(local) if source.startswith(".") or local.exists() else source


def from_hf_config(cfg: dict) -> Architecture:
    """A Hugging Face config.json's shape (Llama-style names, and OPT's where they differ)."""
    heads = cfg["num_attention_heads"]
    return Architecture(
        num_layers=cfg["num_hidden_layers"],
        hidden_size=cfg["hidden_size"],
        num_attention_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate_size=cfg.get("intermediate_size") or cfg["ffn_dim"],
        vocab_size=cfg["vocab_size"],
        tie_word_embeddings=cfg.get("tie_word_embeddings", cfg.get("model_type") == "opt"),
        gated_mlp=cfg.get("model_type") not in UNGATED_MLP_MODEL_TYPES,
    )


UNGATED_MLP_MODEL_TYPES = {"opt", "gpt2", "gpt_bigcode", "gpt_neox"}
# One try per process: a machine that cannot reach the hub should not wait on every model.
HUB_TIMEOUT_S = 5.0
_hub_unreachable = False
# The hub's answer per URL, for the process: a config names a model in several places (pools,
# drafts, the planner), and each shape lookup would otherwise ask again.
_hub_answers: dict[str, dict | None] = {}


def hub_config(repo_id: str) -> dict | None:
    """The hub's config.json of `repo_id` (HF_TOKEN for gated repos); None when the hub is
    offline, unreachable, or does not give it (unknown or gated without a token)."""
    global _hub_unreachable
    if _hub_unreachable or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    url = hf_hub_url(repo_id, "config.json", endpoint=os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    if url in _hub_answers:
        return _hub_answers[url]
    try:
        response = httpx.get(url, headers=build_hf_headers(), timeout=HUB_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as e:
        _hub_unreachable = True
        logger.info("the hub is not reachable (%s); model shapes come from local files and the catalogue", e)
        return None
    if response.status_code != 200:
        logger.info("the hub gave no config.json for %s (HTTP %s)", repo_id, response.status_code)
    _hub_answers[url] = response.json() if response.status_code == 200 else None
    return _hub_answers[url]


def _hub_id(source: str) -> bool:
    return source.count("/") == 1 and not source.startswith((".", "/"))


def find_hf_config(source: str) -> dict | None:
    """A model's config.json: a local checkpoint, the local Hugging Face cache, then the hub."""
    config_json = Path(resolve_source(source)) / "config.json"
    if config_json.is_file():
        return json.loads(config_json.read_text())
    if not _hub_id(source):
        return None
    cache_dir = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    cached = try_to_load_from_cache(source, "config.json", cache_dir=cache_dir)
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text())
    return hub_config(source)


def resolve_architecture(source: str) -> Architecture | None:
    """The shape of a model: its config.json where one is found (`find_hf_config`), else the
    catalogue; None when neither knows it."""
    if (cfg := find_hf_config(source)) is not None:
        return from_hf_config(cfg)
    return KNOWN_ARCHITECTURES.get(source)
