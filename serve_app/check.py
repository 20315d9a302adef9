"""Validate a config without GPUs and print its placement plan.

    python -m serve_app.check CONFIG [CONFIG ...]

CONFIG is a Ray Serve config file (as given to `serve run`) or a KubeRay RayService manifest
(its `spec.serveConfigV2` is checked). Exit code 0 when every application of every file is
valid and fits, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from cluster.planner import acceptance
from cluster.planner.projection import project_model
from cluster.planner.report import summary_lines
from cluster.planner.step_costs import CalibrationTable
from serve_app.config.placement import plan_app, render
from serve_app.config.schema import AppConfig, format_validation_error

APP_IMPORT_PATH = "serve_app.app:build_app"


class ConfigError(Exception):
    pass


def serve_configs(path: Path) -> list[dict]:
    """The Serve config(s) in a file: the file itself, or a RayService's serveConfigV2."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from e
    services = [d for d in docs if d.get("kind") == "RayService"]
    if not services:
        return docs[:1]
    return [yaml.safe_load(s["spec"]["serveConfigV2"]) for s in services]


def load_apps(path: Path) -> list[tuple[str, AppConfig]]:
    """Every application of ours in the file, validated with the same schema Serve uses."""
    return [app for serve_config in serve_configs(path) for app in apps_in(serve_config, str(path))]


def apps_in(serve_config: dict, where: str) -> list[tuple[str, AppConfig]]:
    """Every application of ours in one Serve config; errors start with `where`."""
    try:
        deploy = ServeDeploySchema.model_validate(serve_config)
    except ValidationError as e:
        raise ConfigError(f"{where}: not a valid Ray Serve config:\n{e}") from e
    apps = []
    for app in deploy.applications:
        if app.import_path != APP_IMPORT_PATH:
            continue
        try:
            apps.append((app.name, AppConfig.model_validate(app.args)))
        except ValidationError as e:
            prefix = f"{where}: applications[{app.name}].args."
            raise ConfigError("\n".join(prefix + line for line in format_validation_error(e).splitlines())) from e
    if not apps:
        raise ConfigError(f"{where}: no application with import_path {APP_IMPORT_PATH}")
    return apps


def projection_summary(path: Path, app: AppConfig) -> str:
    """What speculation is projected to give each GPU model's classes (`cluster.planner`)."""
    lines = []
    for model in app.models:
        if model.accelerator.kind != "gpu":
            continue
        lines.append(
            f"{model.id}: projected from measured GPU step costs and published acceptance "
            f"(tables: python -m cluster.planner {path})"
        )
        try:
            lines += summary_lines(*project_model(model, CalibrationTable(), acceptance.load(None)))
        except (ValueError, FileNotFoundError) as e:
            lines.append(f"  no projection: {e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    ok = True
    for path in args.configs:
        try:
            apps = load_apps(path)
        except ConfigError as e:
            print(f"INVALID {e}", file=sys.stderr)
            ok = False
            continue
        for name, app in apps:
            print(f"{path} / application {name}: valid")
            ingress = app.ingress
            print(
                f"ingress: {ingress.num_replicas} replica(s), each serving up to {ingress.overload.max_in_flight} "
                f"completions at once (then {ingress.overload.status_code} with Retry-After "
                f"{ingress.overload.retry_after_s:g} s); a stopping replica finishes its requests for up to "
                f"{app.shutdown_grace_s:g} s"
            )
            print(render(plan_app(app)))
            print(projection_summary(path, app))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
