"""The KubeRay manifest: valid against the RayService CRD, same app as configs/prod.yaml,
and enough GPUs of the right type in its worker group for the placement plan."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from serve_app.check import load_apps
from serve_app.config.placement import plan_app
from serve_app.llm_configs import ENGINE_LOAD_POLICY, build_draft_llm_config, build_llm_config
from tests.helpers import ROOT

SCHEMAS = ROOT.parent / "shared" / "k8s-schemas"
MANIFEST = ROOT / "k8s" / "rayservice.yaml"
GPU_PRODUCT_LABELS = {"H100": "NVIDIA-H100-80GB-HBM3", "L4": "NVIDIA-L4"}


def _crd_schema(name: str) -> dict:
    path = SCHEMAS / name
    if not path.exists():
        pytest.fail(f"KubeRay CRD schemas are expected at {SCHEMAS} (shared/ beside the project)")
    crd = yaml.safe_load(path.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def _service() -> dict:
    return next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "RayService")


def test_rayservice_matches_the_crd_schema():
    jsonschema.validate(_service(), _crd_schema("ray.io_rayservices.yaml"))


def test_crd_validation_catches_a_broken_manifest():
    broken = _service()
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _crd_schema("ray.io_rayservices.yaml"))


def test_serve_config_is_configs_prod_yaml():
    embedded = yaml.safe_load(_service()["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text())


def test_worker_groups_hold_the_plan():
    [(_, app)] = load_apps(MANIFEST)
    plans = plan_app(app)
    groups = _service()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for gpu_type in {p.accelerator_type for p in plans}:
        need_min = sum(p.min_replicas * p.devices_per_replica for p in plans if p.accelerator_type == gpu_type)
        need_max = sum(p.max_replicas * p.devices_per_replica for p in plans if p.accelerator_type == gpu_type)
        matching = [
            g
            for g in groups
            if g["template"]["spec"].get("nodeSelector", {}).get("nvidia.com/gpu.product")
            == GPU_PRODUCT_LABELS[gpu_type]
        ]
        assert matching, f"no worker group selects {gpu_type} nodes"
        per_pod = [int(g["rayStartParams"]["num-gpus"]) for g in matching]
        for g, gpus in zip(matching, per_pod):
            limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) == gpus
            # A TP group must sit on one node (STRICT_PACK): pods hold whole replicas.
            tp_sizes = {p.tensor_parallel_size for p in plans if p.accelerator_type == gpu_type}
            assert all(gpus % tp == 0 for tp in tp_sizes)
        assert sum(g["minReplicas"] * n for g, n in zip(matching, per_pod)) >= need_min
        assert sum(g["maxReplicas"] * n for g, n in zip(matching, per_pod)) >= need_max


def test_prod_engines_are_placed_as_planned():
    """The LLMConfigs `serve run configs/prod.yaml` builds, by the same code as the local config's."""
    [(_, app)] = load_apps(ROOT / "configs" / "prod.yaml")
    model = app.models[0]
    routed = build_llm_config(model, model.pool("routed"))
    assert routed.accelerator_type == "H100"
    assert routed.placement_group_config == {"bundle_per_worker": {"GPU": 1}, "strategy": "STRICT_PACK"}
    assert routed.engine_kwargs["tensor_parallel_size"] == 4
    assert routed.engine_kwargs["speculative_config"]["method"] == "custom_class"
    assert "draft" not in str(routed.engine_kwargs["speculative_config"]), "no drafter on the target's GPUs"
    draft = build_draft_llm_config(model, model.draft_worker("llama-1b"))
    assert draft.accelerator_type == "H100"
    assert draft.placement_group_config == {"bundle_per_worker": {"GPU": 0.5}, "strategy": "STRICT_PACK"}
    assert draft.engine_kwargs["gpu_memory_utilization"] == 0.45
    assert draft.engine_kwargs["enable_prefix_caching"] is True
    assert draft.engine_kwargs["max_model_len"] >= model.max_model_len
    assert draft.deployment_config["autoscaling_config"]["max_replicas"] == 6


def test_prod_autoscaling_reaches_the_serve_deployments(ray_cluster, monkeypatch):
    """What Ray Serve deploys for prod.yaml (its own build step over our builder): every target pool
    and draft worker autoscales within its configured bounds, on a finite ongoing-requests target
    (Ray Serve LLM's default, 1e9, would never add a replica) and the engines' queue and TTFT, and
    one spec tuner replica."""
    import ray
    from ray.serve._private.build_app import build_app as serve_build_app

    from serve_app.app import build_app

    monkeypatch.setenv("RAY_ADDRESS", ray_cluster["address"])  # the builder may connect; never start a cluster
    [(_, app)] = load_apps(ROOT / "configs" / "prod.yaml")
    model = app.models[0]
    try:
        built = {d.name: d._deployment_config for d in serve_build_app(build_app(app), name="specserve").deployments}
    finally:
        ray.shutdown()
    wanted = {f"target-llama-3_3-70b-instruct-{p.name}": p.autoscaling for p in model.pools}
    wanted |= {f"draft-llama-3_3-70b-instruct-{w.name}": w.autoscaling for w in model.draft_workers}
    for name, scaling in wanted.items():
        serve_scaling = built[name].autoscaling_config
        assert (serve_scaling.min_replicas, serve_scaling.max_replicas) == (scaling.min_replicas, scaling.max_replicas)
        assert serve_scaling.target_ongoing_requests == scaling.target_ongoing_requests < 1e6
        assert (serve_scaling.upscale_delay_s, serve_scaling.downscale_delay_s) == (30, 600)
        # Ray Serve runs the engine-load policy (queue depth and TTFT) with each deployment's objectives.
        assert serve_scaling.policy.policy_function == ENGINE_LOAD_POLICY
        assert serve_scaling.policy.policy_kwargs == {
            "ttft_slo_s": scaling.ttft_slo_s,
            "max_waiting_requests": scaling.max_waiting_requests,
        }
    assert wanted["target-llama-3_3-70b-instruct-eagle3"].ttft_slo_s == 1.5
    assert built["spec-tuner"].num_replicas == 1 and built["spec-tuner"].autoscaling_config is None
