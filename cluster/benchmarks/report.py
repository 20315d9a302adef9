"""Command-line options and output shared by the benchmarks."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_START = time.monotonic()


# Options several benchmarks read; each asks `parser` for the ones it reads, so none is taken and ignored.
_OPTIONS = {
    "base_url": (("--base-url",), {"default": "http://127.0.0.1:8000", "help": "the running app"}),
    "methods": (
        ("--methods",),
        {"default": "none,ngram,draft_model,remote_draft", "help": "comma-separated; must include none"},
    ),
    "concurrency": (("--concurrency",), {"default": "1,8", "help": "comma-separated"}),
    "control_key": (
        ("--control-key-file",),
        {
            "type": Path,
            "default": Path(".cache/control_key"),
            "help": "the app's control key (scripts/run_local.sh writes it here); $SPECSERVE_CONTROL_KEY wins",
        },
    ),
}


def parser(doc: str, *options: str) -> argparse.ArgumentParser:
    """--model, --max-tokens and --out, plus the `options` of `_OPTIONS` the benchmark reads."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    for option in options:
        flags, kwargs = _OPTIONS[option]
        p.add_argument(*flags, **kwargs)
    return p


def control_key(args: argparse.Namespace) -> str:
    """The key of the app's control routes, or an error that says where to put it."""
    if key := os.environ.get("SPECSERVE_CONTROL_KEY"):
        return key
    if args.control_key_file.is_file() and (key := args.control_key_file.read_text().strip()):
        return key
    raise SystemExit(
        f"this benchmark empties the app's prefix caches between arms, a control route: set "
        f"SPECSERVE_CONTROL_KEY or --control-key-file (not found: {args.control_key_file})"
    )


def write(out: Path, name: str, rows: list[dict] | dict, table: str) -> None:
    """DIR/NAME.json (every number) and DIR/NAME.md (the table), and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    (out / f"{name}.md").write_text(table)
    print(table)


def progress(message: str) -> None:
    """One line per finished arm on stderr, so a run of many minutes shows where it is."""
    print(f"[{time.monotonic() - _START:5.0f}s] {message}", file=sys.stderr, flush=True)


def plot_throughput(out: Path, name: str, rows: list[dict], x: str, series: str) -> Path:
    """DIR/NAME.png: tokens/s against `x`, one line per value of `series`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(r[series] for r in rows):
        points = sorted((r[x], r["tokens_per_s"]) for r in rows if r[series] == label)
        ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(x)
    ax.set_ylabel("tokens/s")
    ax.set_title(name)
    ax.legend()
    ax.grid(alpha=0.3)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
