"""Project a config's GPU pools from measured step costs (see the package's docstring).

python -m cluster.planner CONFIG [--acceptance FILE] [--context TOKENS]
python -m cluster.planner --anchors       # the projections against published measurements
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.planner import acceptance
from cluster.planner.anchors import anchor_table
from cluster.planner.report import render_model
from cluster.planner.step_costs import CalibrationTable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", type=Path)
    parser.add_argument("--acceptance", type=Path, help="JSON {class: {method: alpha}} over the published defaults")
    parser.add_argument("--context", type=int, default=2048, help="KV context per request (tokens)")
    parser.add_argument("--anchors", action="store_true", help="check the planner against published measurements")
    args = parser.parse_args(argv)
    table = CalibrationTable()
    if args.anchors:
        print(anchor_table(table))
        return 0
    if args.config is None:
        parser.error("give a CONFIG or --anchors")
    from serve_app.check import ConfigError, load_apps

    try:
        apps = load_apps(args.config)
    except ConfigError as e:
        print(f"INVALID {e}", file=sys.stderr)
        return 1
    alphas = acceptance.load(args.acceptance)
    for name, app in apps:
        for model in app.models:
            print(f"## {args.config} / {name} / {model.id}\n")
            print(render_model(model, table, alphas, args.context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
