"""What one request asks of the routed proposer, carried in `SamplingParams.extra_args`.

The ingress puts these keys into the OpenAI body's `vllm_xargs`; vLLM hands them to the
engine as `extra_args` unchanged, so the choice travels with the request into the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METHOD_KEY = "spec_method"
K_KEY = "spec_k"
CLASS_KEY = "spec_class"
# The request's k was not pinned by its client: the spec tuner's k for its class replaces it.
TUNED_KEY = "spec_tuned"

# The class of requests to a model without a router.
DEFAULT_CLASS = "default"
# Drafts from the model's separately placed draft worker (see `remote_draft.py`).
REMOTE_DRAFT = "remote_draft"
# Drafts from the draft model loaded in the routed engine's own worker (see `local_draft.py`).
LOCAL_DRAFT = "local_draft"
# Prompt lookup where the request's tokens have a match, else the local draft model.
NGRAM_OR_DRAFT = "ngram_or_draft"
# Methods the routed proposer runs per request inside one target engine.
ROUTED_METHODS: tuple[str, ...] = ("ngram", REMOTE_DRAFT, LOCAL_DRAFT, NGRAM_OR_DRAFT, "none")
# Those that need the pool's own draft model (`speculation.draft` of a routed pool), and the
# architectures (config.json model_type) `local_draft.py` runs.
LOCAL_DRAFT_METHODS = (LOCAL_DRAFT, NGRAM_OR_DRAFT)
LOCAL_DRAFT_MODEL_TYPES = ("llama",)


@dataclass(frozen=True)
class RequestSpec:
    method: str = "none"
    k: int = 0
    request_class: str = DEFAULT_CLASS
    tuned: bool = False

    def to_xargs(self) -> dict[str, Any]:
        return {METHOD_KEY: self.method, K_KEY: self.k, CLASS_KEY: self.request_class, TUNED_KEY: self.tuned}

    @classmethod
    def from_extra_args(cls, extra: dict[str, Any] | None, k_max: int) -> RequestSpec:
        """Unknown or missing values mean no speculation: a bad hint must not fail a request."""
        extra = extra or {}
        method = extra.get(METHOD_KEY, "none")
        request_class = str(extra.get(CLASS_KEY, DEFAULT_CLASS))
        try:
            k = max(0, min(int(extra.get(K_KEY, 0)), k_max))
        except (TypeError, ValueError):
            k = 0
        if method not in ROUTED_METHODS or k == 0:
            return cls(request_class=request_class)
        return cls(method, k, request_class, extra.get(TUNED_KEY) is True)
