"""The KubeRay deployment: `kubectl apply -k k8s/` renders documents valid against the KubeRay
CRDs and Kubernetes' own schemas, the same app as configs/prod.yaml, enough GPUs of the right
type for the placement plan, and the pieces an operator needs wired to each other (the HTTP
Service, readiness, the PodMonitor, the dashboard ConfigMap, the Secrets)."""

from __future__ import annotations

import copy
from pathlib import PurePosixPath

import yaml

from cluster import k8s_manifests
from serve_app.check import load_apps
from serve_app.config.placement import plan_app
from serve_app.llm_configs import ENGINE_LOAD_POLICY, build_draft_llm_config, build_llm_config
from tests.helpers import ROOT

K8S = ROOT / "k8s"
MANIFEST = K8S / "rayservice.yaml"
GPU_PRODUCT_LABELS = {"H100": "NVIDIA-H100-80GB-HBM3", "L4": "NVIDIA-L4"}


def _service() -> dict:
    return next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "RayService")


def _rendered() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in k8s_manifests.render(K8S)}


def _pod_templates(service: dict) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def _secret_names(node):
    """Every Secret a manifest reads: volumes' secretName and env's secretKeyRef."""
    if isinstance(node, dict):
        if "secretName" in node:
            yield node["secretName"]
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]["name"]
        for value in node.values():
            yield from _secret_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _secret_names(value)


def test_kustomize_renders_the_deployment_and_every_document_is_valid():
    rendered = k8s_manifests.render(K8S)
    docs = {doc["kind"]: doc for doc in rendered}
    assert set(docs) == {"RayService", "PodMonitor", "ConfigMap"}
    assert docs["RayService"] == _service(), "kustomize must not change the RayService"
    assert k8s_manifests.report(rendered) == []


def test_a_bad_field_is_named_by_its_path():
    broken = _service()
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    [error] = k8s_manifests.errors(broken)
    assert error.startswith("spec.rayClusterConfig.workerGroupSpecs[0].replicas: 'two' is not of type 'integer'")
    config_map = copy.deepcopy(_rendered()["ConfigMap"])
    config_map["metadata"]["labels"]["grafana_dashboard"] = 1
    [error] = k8s_manifests.errors(config_map)
    assert error.startswith("metadata.labels.grafana_dashboard: 1 is not of type 'string'")


def test_a_bad_serve_config_inside_the_rayservice_is_named_by_its_field():
    broken = _service()
    serve_config = yaml.safe_load(broken["spec"]["serveConfigV2"])
    serve_config["applications"][0]["args"]["models"][0]["tensor_parallel_size"] = "four"
    broken["spec"]["serveConfigV2"] = yaml.safe_dump(serve_config)
    [error] = k8s_manifests.errors(broken)
    assert "spec.serveConfigV2: applications[specserve].args.models.0.tensor_parallel_size" in error


def test_the_dashboard_ships_as_a_configmap_for_grafanas_sidecar():
    config_map = _rendered()["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {"specserve.json": (K8S / "dashboards" / "specserve.json").read_text()}


def test_the_podmonitor_scrapes_every_ray_pods_metrics_port():
    monitor, service = _rendered()["PodMonitor"], _service()
    selector = monitor["spec"]["selector"]["matchLabels"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    cluster = service["spec"]["rayClusterConfig"]
    params = [cluster["headGroupSpec"]["rayStartParams"]] + [g["rayStartParams"] for g in cluster["workerGroupSpecs"]]
    for template, start_params in zip(_pod_templates(service), params):
        assert selector.items() <= template["metadata"]["labels"].items()
        [port] = [p for p in template["spec"]["containers"][0]["ports"] if p["name"] == endpoint["port"]]
        assert port["containerPort"] == int(start_params["metrics-export-port"])


def test_http_service_and_readiness_follow_serves_port():
    service = _service()
    serve_port = yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"]
    assert [p["port"] for p in service["spec"]["serveService"]["spec"]["ports"]] == [serve_port]
    for template in _pod_templates(service):
        [container] = template["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/-/healthz", "port": serve_port}
        assert serve_port in {p["containerPort"] for p in container["ports"]}


def test_every_secret_the_pods_read_is_mounted_where_the_app_reads_it_and_created_in_the_readme():
    service, readme = _service(), (ROOT / "README.md").read_text()
    access = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["ingress"]["access"]
    key_dirs = {str(PurePosixPath(access[f]).parent) for f in ("api_keys_file", "control_keys_file")}
    for template in _pod_templates(service):
        [container] = template["spec"]["containers"]
        secret_volumes = {v["name"]: v["secret"]["secretName"] for v in template["spec"]["volumes"] if "secret" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert all(secret_volumes.get(mounts.get(d)) == "specserve-keys" for d in key_dirs)
    names = set(_secret_names(service))
    assert names == {"specserve-keys", "hf-token"}
    for name in names:
        assert f"kubectl create secret generic {name}" in readme, f"README must say how to create {name}"


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
