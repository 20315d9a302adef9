"""Where one request goes: its class, its speculation method and the pool that serves it.

Plain functions of the model's config, the request body and its headers (the ingress only
wires HTTP to them). Bad input raises `RouteError`, which the ingress answers as an OpenAI
400 error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from serve_app.config.schema import ModelConfig, PoolConfig
from serve_app.proposer.request_spec import DEFAULT_CLASS, RequestSpec
from serve_app.router.chooser import Policy
from serve_app.router.classifier import classify, features

POOL_HEADER = "x-spec-pool"
METHOD_HEADER = "x-spec-method"
CLASS_HEADER = "x-request-class"
K_HEADER = "x-spec-k"


class RouteError(ValueError):
    """The request asks for something this model cannot do; the message says what to change."""


@dataclass(frozen=True)
class Route:
    model: str
    pool: PoolConfig
    method: str
    request_class: str
    reason: str  # explicit | default | unsupported_params | or the policy's reason

    def tags(self) -> dict[str, str]:
        return {"model": self.model, "pool": self.pool.name, "method": self.method, "request_class": self.request_class}


def needs_plain_decoding(body) -> str | None:
    """vLLM rejects these sampling parameters whenever speculation is configured."""
    if getattr(body, "min_p", None):
        return "min_p"
    if getattr(body, "logit_bias", None):
        return "logit_bias"
    return None


def refuse_what_the_engine_would_fail_on(model: ModelConfig, body) -> None:
    """Input that passes the OpenAI request models but fails in vLLM with a 500 (found by fuzzing)."""
    if getattr(body, "prompt_embeds", None) is not None and not model.engine_kwargs.get("enable_prompt_embeds"):
        raise RouteError(
            f"model '{model.id}' takes no prompt_embeds (its engines run without engine_kwargs.enable_prompt_embeds); "
            "send the prompt as text or token ids"
        )
    for i, message in enumerate(getattr(body, "messages", None) or []):
        # A dict without a role, or a Harmony message (its role sits under `author`): vLLM's chat
        # parser reads message["role"] of every message of a model that is not gpt-oss.
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if not role:
            raise RouteError(f"messages[{i}] has no 'role'; give every message one (system, user, assistant or tool)")


def request_class(model: ModelConfig, body, headers: Mapping[str, str]) -> str:
    """The class the `x-request-class` header names, else the classifier's (routed models only)."""
    if model.router is None:
        return headers.get(CLASS_HEADER, DEFAULT_CLASS)
    names = {c.name for c in model.router.classes}
    explicit = headers.get(CLASS_HEADER)
    if explicit is not None and explicit not in names:
        raise RouteError(f"unknown request class '{explicit}' in header {CLASS_HEADER}; classes: {sorted(names)}")
    if explicit:
        return explicit
    try:
        return classify(features(body), names, model.router.default_class)
    except ValueError as e:  # content the classifier could not read is the client's error
        raise RouteError(str(e)) from e


def route(model: ModelConfig, body, headers: Mapping[str, str], policy: Policy | None, load: float) -> Route:
    """A pool and method named by headers win; then parameters that only plain decoding takes;
    then the method header; then the policy (given the load: requests in flight per target
    replica); a model without a router goes to its first pool."""
    refuse_what_the_engine_would_fail_on(model, body)
    cls = request_class(model, body, headers)
    if pool_name := headers.get(POOL_HEADER):
        pool = next((p for p in model.pools if p.name == pool_name), None)
        if pool is None:
            raise RouteError(
                f"unknown pool '{pool_name}' in header {POOL_HEADER} for model '{model.id}'; "
                f"pools: {[p.name for p in model.pools]}"
            )
        method = headers.get(METHOD_HEADER) or pool.speculation.methods()[0]
        if method not in pool.speculation.methods():
            raise RouteError(
                f"pool '{pool.name}' cannot run method '{method}'; it runs {list(pool.speculation.methods())}"
            )
        return Route(model.id, pool, method, cls, "explicit")
    if param := needs_plain_decoding(body):
        pool = next((p for p in model.pools if p.speculation.method == "none"), None)
        if pool is None:
            raise RouteError(
                f"'{param}' cannot be used with speculative decoding and model '{model.id}' has "
                f"no pool without it; remove '{param}'"
            )
        return Route(model.id, pool, "none", cls, "unsupported_params")
    if method := headers.get(METHOD_HEADER):
        reason = "explicit"
    elif policy is not None:
        choice = policy.choose(cls, load)
        method, reason = choice.method, choice.reason
    else:
        pool = model.pool(None)
        return Route(model.id, pool, pool.speculation.methods()[0], cls, "default")
    pool = model.pool_for_method(method, by_policy=reason != "explicit")
    if pool is None:
        raise RouteError(f"no pool of model '{model.id}' runs method '{method}'")
    return Route(model.id, pool, method, cls, reason)


def routed_spec(model: ModelConfig, chosen: Route, headers: Mapping[str, str]) -> RequestSpec:
    """What a request on a routed pool asks of the proposer: the k of the x-spec-k header, pinned;
    else its class's k, which the pool's spec tuner (if any) replaces with the k it tuned."""
    k_max = chosen.pool.speculation.num_speculative_tokens
    if explicit := headers.get(K_HEADER):
        if not explicit.isdigit() or not 1 <= int(explicit) <= k_max:
            raise RouteError(
                f"header {K_HEADER} must be an integer from 1 to {k_max} for pool "
                f"'{chosen.pool.name}', got '{explicit}'"
            )
        return RequestSpec(chosen.method, int(explicit), chosen.request_class)
    return RequestSpec(
        chosen.method, model.class_k(chosen.request_class, chosen.pool), chosen.request_class, tuned=True
    )


def load_per_replica(model: ModelConfig, in_flight: Counter[tuple[str, str]]) -> float:
    """Requests in flight (per (model, pool)) per target replica, at the pools' minimum size."""
    replicas = sum(max(1, p.autoscaling.min_replicas) for p in model.pools)
    return sum(n for (m, _), n in in_flight.items() if m == model.id) / replicas
