"""vLLM's own `--speculative-config` JSON as a pool's speculation, read the way vLLM reads it.

Users arrive with a recipe that works in vLLM. A pool can take that JSON as it is
(`speculation: {speculative_config: {...}}`); this module checks its keys against vLLM's
`SpeculativeConfig`, infers the method where vLLM would (from the draft's name and
config.json), and splits it into the schema's fields, so placement, memory and vocabulary
checks see the draft. `SpeculationConfig.vllm_config()` puts it back together for the engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from serve_app.config.architecture import find_hf_config

# Set by vLLM itself from the engine's other arguments, never by a user.
VLLM_DERIVED = {
    "target_model_config",
    "target_parallel_config",
    "draft_model_config",
    "draft_parallel_config",
    "draft_load_config",
}
NGRAM_MODELS = ("ngram", "[ngram]")
# Methods that take k from the draft's own config.json (n_predict) when the JSON leaves it out.
K_FROM_DRAFT_CONFIG = {"mlp_speculator", "medusa"}
SCHEMA_FIELDS = ("method", "num_speculative_tokens", "draft", "options")
# The model_type of catalogued drafters that vLLM recognises by it, for machines that cannot
# read their config.json (the shapes are in config/architecture.py's catalogue).
KNOWN_MODEL_TYPES = {"ibm-fms/llama3-70b-accelerator": "mlp_speculator"}


def user_fields() -> set[str]:
    from vllm.config import SpeculativeConfig

    return {f.name for f in dataclasses.fields(SpeculativeConfig) if f.init} - VLLM_DERIVED


def infer_method(model: str | None) -> str:
    """vLLM's inference when the JSON names a model and no method (SpeculativeConfig.__post_init__)."""
    if model is None:
        raise ValueError("speculative_config needs 'method' or 'model' (a draft, or 'ngram'), as vLLM does")
    if model in NGRAM_MODELS:
        return "ngram"
    name = model.lower()
    if "eagle-" in name:
        return "eagle"
    if "eagle3" in name:
        return "eagle3"
    model_type = (find_hf_config(model) or {}).get("model_type") or KNOWN_MODEL_TYPES.get(model)
    return model_type if model_type in K_FROM_DRAFT_CONFIG else "draft_model"


def to_schema_fields(speculation: dict[str, Any]) -> dict[str, Any]:
    """The pool's `speculation` with `speculative_config` split into method, k, draft and options."""
    given = dict(speculation["speculative_config"])
    if clash := sorted(set(SCHEMA_FIELDS) & speculation.keys()):
        raise ValueError(f"speculative_config replaces {clash}; give either vLLM's JSON or those fields, not both")
    if unknown := sorted(set(given) - user_fields()):
        raise ValueError(
            f"speculative_config: {unknown} are not fields of vLLM's SpeculativeConfig; "
            f"it takes {sorted(user_fields())}"
        )
    model = given.pop("model", None)
    method = given.pop("method", None) or infer_method(model)
    fields = {**speculation, "method": method, "num_speculative_tokens": given.pop("num_speculative_tokens", None)}
    fields["options"] = given
    if model is not None and model not in NGRAM_MODELS:
        fields["draft"] = {"source": model}
    return fields
