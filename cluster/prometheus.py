"""A real Prometheus server scraping the app's metrics (Ray's metrics agent), for a local look
at the dashboard's queries and for the tests that check them.

    python -m cluster.prometheus [--target 127.0.0.1:8080] [--port 9090]

runs Prometheus in the foreground until Ctrl-C, scraping the target every 2 seconds;
`scripts/run_local.sh` exports the app's metrics on 127.0.0.1:8080. The binary is Debian's
`prometheus` package (`scripts/install.sh` installs it; any `prometheus` on PATH will do).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

SCRAPE_INTERVAL_S = 2  # Ray's agent refreshes app metrics every few seconds
READY_DEADLINE_S = 60


def binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise FileNotFoundError(
            "no `prometheus` on PATH: `bash scripts/install.sh` installs Debian's package "
            "(apt-get install prometheus), or put the official binary on PATH"
        )
    return found


def write_config(directory: Path, target: str) -> Path:
    config = {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [{"job_name": "specserve-ray", "static_configs": [{"targets": [target]}]}],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(target: str, port: int, directory: Path, log, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Prometheus on 127.0.0.1:`port`, its config and data under `directory`; returns once it is
    ready to answer queries."""
    proc = subprocess.Popen(
        [
            binary(),
            f"--config.file={write_config(directory, target)}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    end = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"prometheus was not ready within {READY_DEADLINE_S}s")


def query(base_url: str, expr: str) -> list[dict]:
    """An instant query's result vector; raises with Prometheus' own message on a bad expression."""
    answer = httpx.get(f"{base_url}/api/v1/query", params={"query": expr}, timeout=10).json()
    if answer["status"] != "success":
        raise ValueError(f"{answer.get('errorType')}: {answer.get('error')} in {expr}")
    return answer["data"]["result"]


def targets_up(base_url: str) -> bool:
    answer = httpx.get(f"{base_url}/api/v1/targets", timeout=10).json()
    active = answer["data"]["activeTargets"]
    return bool(active) and all(t["health"] == "up" for t in active)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:8080", help="host:port of Ray's metrics agent")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="specserve-prometheus-") as directory:
        proc = start(args.target, args.port, Path(directory), None)
        print(f"Prometheus on http://127.0.0.1:{args.port}, scraping {args.target}; Ctrl-C ends it")
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
