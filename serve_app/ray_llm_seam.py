"""The one place this project reaches into Ray Serve LLM's private modules (`ray.llm._internal`).

Ray Serve LLM exports its ingress class, `LLMServer` and `make_fastapi_ingress`, but not the
engine class behind `LLMServer` (`VLLMEngine`, which `serve_app/engine.py` extends to choose
vLLM's executor), nor the pieces an ingress that adds routes and middleware also needs: the
FastAPI app with Ray's own middleware (OpenAI-shaped errors, request ids, HTTP metrics), the
OpenAI error exception, the model list type and model cards, and the call that reaches every
replica of a deployment (`broadcast`, which Ray Serve LLM's /reset_prefix_cache uses).
`tests/test_ray_llm_seam.py` pins what is used here, so a Ray upgrade that moves them fails
there first."""

from ray.llm._internal.serve.core.configs.openai_api_models import (  # noqa: F401
    ModelList,
    OpenAIHTTPException,
    to_model_metadata,
)
from ray.llm._internal.serve.core.ingress.ingress import init as new_ingress_app  # noqa: F401
from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine  # noqa: F401
from ray.llm._internal.serve.utils.broadcast import broadcast  # noqa: F401
