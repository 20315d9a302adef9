"""Request classes and the method policy, without engines (the HTTP tests cover them live)."""

from __future__ import annotations

import copy
import random
from collections import Counter
from types import SimpleNamespace

import pytest
import yaml
from pydantic import ValidationError

from serve_app.config.schema import AppConfig, RouterConfig, format_validation_error
from serve_app.observability.engine_steps import EngineSteps
from serve_app.proposer.request_spec import RequestSpec
from serve_app.router.chooser import Choice, Policy
from serve_app.router.classifier import classify, features, prompt_text
from serve_app.router.planner import ClassPlan, Option, plan_class
from serve_app.router.route import (
    CLASS_HEADER,
    K_HEADER,
    METHOD_HEADER,
    POOL_HEADER,
    RouteError,
    load_per_replica,
    route,
    routed_spec,
)
from serve_app.tuner.goodput import StepCost, expected_tokens
from tests.helpers import LOCAL_CONFIG, ROOT

CLASSES = {"code_edit", "summarize", "agentic", "chat", "bulk"}
CODE = "def area(r):\n    import math\n    return math.pi * r * r\n\nclass Circle:\n    pass\n"


def _completion(prompt: str, **kw):
    return SimpleNamespace(prompt=prompt, **kw)


def _chat(text: str, **kw):
    return SimpleNamespace(messages=[{"role": "user", "content": text}], **kw)


@pytest.mark.parametrize(
    "body, expected",
    [
        (_chat("Rename r to radius in this code:\n" + CODE), "code_edit"),
        (_completion(CODE + "\n# edited version:\n"), "code_edit"),
        (_completion(CODE), "code_edit"),
        (
            _completion("def parse_args(argv):\n    parser = argparse.ArgumentParser()\n    parser.add_argument("),
            "code_edit",
        ),
        (_chat("Summarize this document:\n" + CODE), "summarize"),
        (_chat("Tell me about os.path.join(a, b)"), "chat"),
        (_chat("Summarize the key points of this report: " + "sales grew. " * 20), "summarize"),
        (_chat("lorem ipsum dolor sit amet " * 100), "summarize"),  # long prose
        (_chat("what's the weather?", tools=[{"type": "function", "function": {"name": "weather"}}]), "agentic"),
        (_chat("write five taglines", n=5), "bulk"),
        (_chat("write a wild poem", temperature=1.5), "bulk"),
        (_chat("Tell me a story.", temperature=1.0), "chat"),
        (_chat("Tell me a story about a dragon."), "chat"),
    ],
)
def test_classifier(body, expected):
    assert classify(features(body), CLASSES, "chat") == expected


def test_classifier_only_returns_declared_classes():
    assert classify(features(_chat("hi", tools=[{"x": 1}])), {"chat"}, "chat") == "chat"


def _router(**overrides) -> RouterConfig:
    base = {
        "default_class": "chat",
        "classes": [
            {"name": "code_edit", "methods": ["ngram", "draft_model"], "default": "ngram"},
            {"name": "chat", "methods": ["draft_model", "ngram"], "default": "draft_model"},
        ],
    }
    return RouterConfig.model_validate({**base, **overrides})


def test_static_policy_returns_the_class_default():
    policy = Policy(_router(policy="static"))
    assert policy.choose("code_edit", 0).method == "ngram"
    assert policy.choose("chat", 0).method == "draft_model"
    assert policy.choose("chat", 0).reason == "static"


def test_high_load_drops_to_no_speculation():
    policy = Policy(_router(policy="static", high_load_in_flight=4))
    choice = policy.choose("chat", 5)
    assert (choice.method, choice.reason) == ("none", "high_load")
    assert policy.choose("chat", 4).method == "draft_model"


def _option(method: str, goodput: float | None, k: int = 4, age_s: float | None = 0.0) -> Option:
    if method == "none":
        return Option(method, "pool", 0, goodput)
    return Option(method, "pool", k, goodput, age_s=age_s if goodput is not None else None)


def _plan(default: str, options: dict, current: str | None = None, switch_margin: float = 0.1) -> ClassPlan:
    return plan_class(default, options, current, switch_margin, explore_share=0.1, explore_after_s=300)


def test_planner_picks_the_method_with_the_most_goodput_and_explores_only_what_is_unknown_or_stale():
    options = {
        "ngram": _option("ngram", 60.0),
        "draft_model": _option("draft_model", 35.0, age_s=20),
        "none": _option("none", 30.0),
    }
    plan = _plan("draft_model", options)
    assert (plan.method, plan.reason) == ("ngram", "goodput")
    # Recent evidence, and none's figure (the pool's step cost): nothing to learn, nothing explored.
    assert plan.explore == {}
    # Evidence older than explore_after_s gets the exploring share back until it is refreshed.
    plan = _plan("draft_model", {**options, "draft_model": _option("draft_model", 35.0, age_s=301)})
    assert plan.explore == {"draft_model": pytest.approx(0.1)}
    # Methods not measured yet share it with the stale ones.
    plan = _plan(
        "draft_model",
        {**options, "draft_model": _option("draft_model", 35.0, age_s=301), "none": _option("none", None)},
    )
    assert plan.explore == {"draft_model": pytest.approx(0.05), "none": pytest.approx(0.05)}


def test_a_class_whose_evidence_favours_the_draft_gets_it():
    options = {
        "ngram": _option("ngram", 31.0),
        "draft_model": _option("draft_model", 55.0),
        "none": _option("none", 30.0),
    }
    assert _plan("ngram", options).method == "draft_model"


def test_thin_or_marginal_evidence_does_not_move_the_choice():
    # The default has no evidence yet: another method's numbers alone do not replace it.
    thin = {"draft_model": _option("draft_model", None), "ngram": _option("ngram", 80.0), "none": _option("none", 30.0)}
    plan = _plan("draft_model", thin)
    assert (plan.method, plan.reason) == ("draft_model", "default")
    # A method without evidence is never chosen, however good the current one's rivals look.
    assert _plan("ngram", {**thin, "ngram": _option("ngram", 40.0)}, "ngram").method == "ngram"
    # Within the margin of the current choice: it holds.
    close = {
        "draft_model": _option("draft_model", 50.0),
        "ngram": _option("ngram", 54.0),
        "none": _option("none", 30.0),
    }
    assert _plan("ngram", close, "draft_model").method == "draft_model"
    assert _plan("ngram", {**close, "ngram": _option("ngram", 56.0)}, "draft_model").method == "ngram"


def test_high_load_in_the_step_costs_leads_to_none():
    """Acceptance stays; the pool's batch grows, and verifying k tokens per row costs more than it saves."""
    cost = StepCost(base_s=0.010, per_token_s=0.001, drafting={"ngram": (0.0002, 0.0)})
    survival = [0.5, 0.25, 0.125, 0.06]

    def options(rows: float) -> dict:
        return {
            "ngram": _option("ngram", expected_tokens(survival, 4) / cost.seconds(rows, "ngram", 4)),
            "none": _option("none", 1.0 / cost.seconds(rows, "none", 0)),
        }

    assert _plan("ngram", options(1)).method == "ngram"
    assert _plan("ngram", options(32), "ngram").method == "none"


def test_goodput_policy_follows_the_table_with_bounded_exploration():
    policy = Policy(_router(policy="goodput"), rng=random.Random(1))
    assert policy.choose("chat", 0) == Choice("draft_model", "default")  # no table yet
    policy.table = {"chat": {"method": "ngram", "explore": {"draft_model": 0.05, "none": 0.05}}}
    picks = Counter(policy.choose("chat", 0) for _ in range(2000))
    assert picks[Choice("ngram", "goodput")] > 1700
    assert 50 < picks[Choice("draft_model", "explore")] < 150 and 50 < picks[Choice("none", "explore")] < 150
    assert policy.choose("chat", 100) == Choice("none", "high_load")


def test_engine_steps_split_draft_counts_over_the_classes_running():
    steps = EngineSteps()
    steps.started("chat")
    steps.record(0.0, 1, [1, 1, 1], [1, 1, 0])
    steps.started("code_edit")
    steps.record(0.01, 2, [2, 2, 2], [2, 0, 0])
    steps.finished("chat")
    steps.record(0.02, 1, [1, 1, 1], [0, 0, 0])
    steps.record(5.0, 1, None, None)  # after an idle gap: not a step's duration
    report = steps.report()
    tallies = {t["request_class"]: t for t in report["tallies"]}
    assert tallies["chat"]["asked_per_position"] == [2, 2, 2]
    assert tallies["chat"]["accepted_per_position"] == [2, 1, 0]
    assert tallies["code_edit"]["asked_per_position"] == [2, 2, 2]
    assert tallies["code_edit"]["accepted_per_position"] == [1, 0, 0]
    assert report["steps"] == [{"rows": 2, "seconds": pytest.approx(0.01)}, {"rows": 1, "seconds": pytest.approx(0.01)}]
    assert steps.report()["steps"] == []  # drained; tallies stay cumulative


def test_request_spec_from_extra_args_is_safe():
    spec = RequestSpec("ngram", 3, "code_edit")
    assert RequestSpec.from_extra_args(spec.to_xargs(), 8) == spec
    assert RequestSpec.from_extra_args({"spec_method": "ngram", "spec_k": 99}, 8) == RequestSpec("ngram", 8)
    for bad in (
        None,
        {},
        {"spec_method": "telepathy", "spec_k": 2},
        {"spec_method": "ngram", "spec_k": "x"},
        {"spec_method": "ngram", "spec_k": 0},
    ):
        assert RequestSpec.from_extra_args(bad, 8) == RequestSpec("none", 0)


def _local_args() -> dict:
    return copy.deepcopy(yaml.safe_load(LOCAL_CONFIG.read_text())["applications"][0]["args"])


def test_router_method_without_a_pool_is_a_config_error(test_models):
    args = _local_args()
    args["models"][0]["router"]["classes"][0]["methods"].append("eagle3")
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate(args)
    msg = format_validation_error(info.value)
    assert "router.classes[0] (code_edit) allows method 'eagle3' but no pool the router may send to serves it" in msg


def test_router_default_must_be_allowed(test_models):
    args = _local_args()
    args["models"][0]["router"]["classes"][0]["default"] = "none"
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate(args)
    assert "default 'none' is not in methods" in format_validation_error(info.value)


def test_methods_resolve_to_pools(test_models):
    model = AppConfig.model_validate(_local_args()).models[0]
    assert model.pool_for_method("ngram").name == "routed"
    assert model.pool_for_method("draft_model").name == "draft"
    assert model.pool_for_method("none").name == "plain"  # a dedicated pool beats the routed one
    prod = yaml.safe_load((ROOT / "configs/prod.yaml").read_text())["applications"][0]["args"]
    prod_model = AppConfig.model_validate(prod).models[0]
    assert prod_model.pool_for_method("eagle3").name == "eagle3"


def test_acceptance_book_settles_drafts_from_what_was_sampled():
    from serve_app.proposer.acceptance import AcceptanceBook

    book = AcceptanceBook()
    # step 1: r1 (code_edit, ngram) asks for and gets 4 draft tokens, r2 (chat, none) none
    book.step(["r1", "r2"], [[5], [6]], [("code_edit", "ngram", 4, 4), ("chat", "none", 0, 0)])
    # step 2: r1 sampled 3 tokens = 2 drafts accepted + 1; proposes 2 more; r2 not scheduled
    book.step(["r1"], [[7, 8, 9]], [("code_edit", "ngram", 2, 2)])
    # step 3: r1 sampled 1 token = none of its 2 drafts accepted; asks for 3, the lookup finds nothing
    book.step(["r1"], [[10]], [("code_edit", "ngram", 3, 0)])
    # step 4: the missed lookup settles as a step that asked for 3 and got nothing accepted
    book.step(["r1"], [[11]], [("code_edit", "ngram", 0, 0)])
    [tally] = book.snapshot()
    assert (tally["request_class"], tally["method"]) == ("code_edit", "ngram")
    assert (tally["drafts"], tally["draft_tokens"], tally["accepted_tokens"]) == (2, 6, 2)  # as vLLM counts them
    assert tally["asked_per_position"] == [3, 3, 2, 1]
    assert tally["accepted_per_position"] == [1, 1, 0, 0]


def _local_model():
    return AppConfig.model_validate(_local_args()).models[0]


def test_route_follows_headers_then_plain_only_params_then_the_policy(test_models):
    model = _local_model()
    policy = Policy(model.router.model_copy(update={"policy": "static"}))
    explicit = route(model, _chat("hi"), {POOL_HEADER: "routed", METHOD_HEADER: "remote_draft"}, policy, 0)
    assert (explicit.pool.name, explicit.method, explicit.reason) == ("routed", "remote_draft", "explicit")
    plain = route(model, _chat("hi", min_p=0.1), {}, policy, 0)
    assert (plain.pool.name, plain.method, plain.reason) == ("plain", "none", "unsupported_params")
    forced = route(model, _chat("hi"), {METHOD_HEADER: "draft_model"}, policy, 0)
    assert (forced.pool.name, forced.method, forced.reason) == ("draft", "draft_model", "explicit")
    edit = route(model, _chat("Rename r to radius in this code:\n" + CODE), {}, policy, 0)
    assert (edit.request_class, edit.pool.name, edit.method, edit.reason) == ("code_edit", "routed", "ngram", "static")
    loaded = route(model, _chat("Rename r to radius in this code:\n" + CODE), {}, policy, 99)
    # The plain pool takes no policy traffic in configs/local.yaml: the routed pool decodes plainly.
    assert (loaded.pool.name, loaded.method, loaded.reason) == ("routed", "none", "high_load")
    assert route(model, _chat("hi"), {METHOD_HEADER: "none"}, policy, 0).pool.name == "plain"
    open_plain = model.model_copy(
        update={"pools": [p.model_copy(update={"policy_traffic": True}) for p in model.pools]}
    )
    loaded = route(open_plain, _chat("Rename r to radius in this code:\n" + CODE), {}, policy, 99)
    assert (loaded.pool.name, loaded.method, loaded.reason) == ("plain", "none", "high_load")
    chat = route(model, _chat("hi"), {CLASS_HEADER: "chat"}, policy, 0)
    assert (chat.pool.name, chat.method) == ("routed", "local_draft")


@pytest.mark.parametrize(
    "headers, words",
    [
        ({POOL_HEADER: "nope"}, ["unknown pool 'nope'", "plain", "routed"]),
        ({POOL_HEADER: "draft", METHOD_HEADER: "ngram"}, ["cannot run method 'ngram'", "draft_model"]),
        ({METHOD_HEADER: "eagle3"}, ["no pool", "eagle3"]),
        ({CLASS_HEADER: "poetry"}, ["unknown request class 'poetry'", "code_edit"]),
    ],
)
def test_route_names_what_to_change_in_a_bad_request(test_models, headers, words):
    model = _local_model()
    with pytest.raises(RouteError) as info:
        route(model, _chat("hi"), headers, Policy(model.router), 0)
    assert all(w in str(info.value) for w in words)


def test_input_the_engine_would_fail_on_is_refused(test_models):
    model = _local_model()
    with pytest.raises(RouteError, match="enable_prompt_embeds"):
        route(model, _completion(None, prompt_embeds="AAAA"), {}, Policy(model.router), 0)
    with pytest.raises(RouteError, match=r"messages\[1\] has no 'role'"):
        route(model, SimpleNamespace(messages=[{"role": "user", "content": "a"}, {"content": "b"}]), {}, None, 0)
    harmony = SimpleNamespace(author=SimpleNamespace(role="user"), content=[])  # parsed as vLLM's Harmony Message
    with pytest.raises(RouteError, match=r"messages\[0\] has no 'role'"):
        route(model, SimpleNamespace(messages=[harmony]), {}, None, 0)
    takes = model.model_copy(update={"engine_kwargs": {"enable_prompt_embeds": True}})
    assert route(takes, _completion("x", prompt_embeds="AAAA"), {}, Policy(model.router), 0).model == model.id


def test_routed_spec_takes_a_pinned_k_within_the_pool_or_the_class_k(test_models):
    model = _local_model()
    chosen = route(model, _chat("Rename r to radius in this code:\n" + CODE), {}, Policy(model.router), 0)
    assert routed_spec(model, chosen, {K_HEADER: "2"}) == RequestSpec("ngram", 2, "code_edit")
    assert routed_spec(model, chosen, {}) == RequestSpec("ngram", 4, "code_edit", tuned=True)
    for bad in ("0", "9", "x"):
        with pytest.raises(RouteError, match="x-spec-k must be an integer from 1 to 8"):
            routed_spec(model, chosen, {K_HEADER: bad})


def test_load_counts_this_models_requests_per_target_replica(test_models):
    model = _local_model()
    in_flight = Counter({(model.id, "routed"): 4, (model.id, "plain"): 2, ("other", "routed"): 9})
    assert load_per_replica(model, in_flight) == 2.0  # 6 requests over 3 pools of one replica


def test_a_class_the_classifier_cannot_recognise_must_say_it_is_header_only():
    classes = [
        {"name": "chat", "methods": ["ngram"], "default": "ngram"},
        {"name": "translate", "methods": ["ngram"], "default": "ngram"},
    ]
    with pytest.raises(ValidationError, match="class 'translate' is not one the classifier recognises.*header_only"):
        RouterConfig.model_validate({"default_class": "chat", "classes": classes})
    classes[1]["header_only"] = True
    assert RouterConfig.model_validate({"default_class": "chat", "classes": classes}).classes[1].header_only


def test_content_parts_vllm_left_unvalidated_are_a_clear_client_error():
    """Content parts that fail vLLM's list validation stay pydantic's one-shot iterator, checked
    as it is read; joining it was a 500 (found by fuzzing). Reading it names the message."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    body = ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "hi"}, {"role": "system", "content": [{"text": "be brief"}]}]
    )
    assert not isinstance(body.messages[1]["content"], (list, str))  # the iterator this guards against
    with pytest.raises(ValueError, match=r"^messages\[1\]\.content: "):
        prompt_text(body)
    assert (
        prompt_text(
            ChatCompletionRequest(
                model="m", messages=[{"role": "system", "content": [{"type": "text", "text": "be brief"}]}]
            )
        )
        == "be brief"
    )
