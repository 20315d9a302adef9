"""Find and end the processes of one run, Ray's and vLLM's alike.

`ray stop` leaves vLLM EngineCore/Worker processes behind (they ignore SIGTERM once their
parent is gone), and it would also stop Ray clusters that are not ours. Instead every process
of a run inherits RUN_ID_ENV from the command that started Ray, and is found by it.

    python -m cluster.processes kill RUN_ID
"""

from __future__ import annotations

import os
import sys
import time

import psutil

RUN_ID_ENV = "SPECSERVE_RUN_ID"


def run_processes(run_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(RUN_ID_ENV) == run_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_run(run_id: str, grace_s: float = 10.0) -> int:
    """SIGTERM every process of the run, then SIGKILL what is left after `grace_s`."""
    procs = run_processes(run_id)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "kill":
        sys.exit("usage: python -m cluster.processes kill RUN_ID")
    print(f"ended {kill_run(sys.argv[2])} process(es) of run {sys.argv[2]}")
