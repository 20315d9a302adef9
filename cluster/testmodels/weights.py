"""The shipped weights of the small test models and their manifest.

    python -m cluster.testmodels.weights ship TRAIN_OUT [--data .gpu/testbed]

`ship` copies what `cluster.testmodels.train` wrote on the GPU machine (the small target and
draft as bf16 safetensors) and the tokenizer they were trained with into `weights/`, with a
manifest: the recipe, the command, the sha256 of every file and the numbers training measured.
`verify` (used by the build) refuses files whose hashes do not match.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FILES = ("tokenizer.json", "target.safetensors", "draft.safetensors")
# Both commands take the same overrides: dataset.py makes the data fields, train.py the rest.
TRAIN_COMMAND = (
    "python -m cluster.testmodels.dataset --out .gpu/testbed{overrides} && "
    "python -m cluster.testmodels.train --data .gpu/testbed --out OUT{overrides} && "
    "python -m cluster.testmodels.weights ship OUT"
)


class WeightsError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The manifest, once every shipped file matches its recorded hash."""
    manifest_path = weights_dir / "manifest.json"
    if not manifest_path.exists():
        raise WeightsError(f"{manifest_path} is missing; retrain with: {TRAIN_COMMAND.format(overrides='')}")
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["sha256"].items():
        path = weights_dir / name
        if not path.exists():
            raise WeightsError(f"{path} is missing (listed in {manifest_path})")
        if sha256(path) != expected:
            raise WeightsError(
                f"{path} does not match its sha256 in {manifest_path}; restore it from git "
                f"(git checkout -- {path}) or retrain with: {manifest['command']}"
            )
    return manifest


def _overrides(recipe: dict) -> str:
    """The `--set` arguments that reproduce `recipe` from the defaults of `recipe.Recipe`."""
    from dataclasses import asdict

    from cluster.testmodels.recipe import Recipe

    defaults = asdict(Recipe())
    changed = []
    for key, value in recipe.items():
        if key in defaults and value != defaults[key]:
            shape = isinstance(value, dict) and "layers" in value
            changed.append(f"{key}={','.join(map(str, value.values()))}" if shape else f"{key}={value}")
    return f" --set {' '.join(changed)}" if changed else ""


def ship(train_out: Path, data: Path, weights_dir: Path = WEIGHTS_DIR, command: str | None = None) -> dict:
    report = json.loads((train_out / "train_report.json").read_text())
    weights_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "tokenizer.json", weights_dir / "tokenizer.json")
    for name in FILES[1:]:
        shutil.copyfile(train_out / name, weights_dir / name)
    manifest = {
        "command": command or TRAIN_COMMAND.format(overrides=_overrides(report["recipe"])),
        "recipe": report["recipe"],
        "trained_on": {"device": report["device"], "torch": report["torch"], "seconds": report["train_s"]},
        "sha256": {name: sha256(weights_dir / name) for name in FILES},
        "bytes": {name: (weights_dir / name).stat().st_size for name in FILES},
        "train_evaluation": {
            kind: {k: v for k, v in row.items() if k != "sample"} for kind, row in report["evaluation"].items()
        },
        "target_history": report["target_history"],
        "draft_history": report["draft_history"],
    }
    if "init_target_run" in report:
        manifest["init_target_run"] = report["init_target_run"]
    (weights_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    p_ship = sub.add_parser("ship", help="copy a training run's output into weights/ with a manifest")
    p_ship.add_argument("train_out", type=Path)
    p_ship.add_argument("--data", type=Path, default=Path(".gpu/testbed"))
    p_ship.add_argument(
        "--command", dest="train_command", help="what reproduces the run, if more than one train.py call (a script)"
    )
    sub.add_parser("verify", help="check the shipped files against the manifest")
    args = parser.parse_args()
    if args.verb == "ship":
        manifest = ship(args.train_out, args.data, command=args.train_command)
        print(json.dumps(manifest["bytes"]))
    else:
        verify()
        print(f"{WEIGHTS_DIR}: all files match the manifest")


if __name__ == "__main__":
    main()
