"""The KubeRay manifest: valid against the RayService CRD, same app as configs/prod.yaml,
and enough GPUs of the right type in its worker group for the placement plan."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from cluster.placement import plan_app
from serve_app.check import load_apps
from tests.conftest import ROOT

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
        matching = [g for g in groups
                    if g["template"]["spec"].get("nodeSelector", {}).get("nvidia.com/gpu.product")
                    == GPU_PRODUCT_LABELS[gpu_type]]
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
