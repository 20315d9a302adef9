"""Find and end the processes of one run, Ray's and vLLM's alike.

`ray stop` leaves vLLM EngineCore/Worker processes behind (they ignore SIGTERM once their
parent is gone), and it would also stop Ray clusters that are not ours. Instead every process
of a run inherits RUN_ID_ENV from the command that started Ray, and is found by it, together
with all its descendants. The environment is read raw from /proc: Ray and vLLM rename their
processes with setproctitle, which zeroes the start of that memory, so psutil's parsed
environ comes back empty for them.

    python -m cluster.processes kill RUN_ID
"""

from __future__ import annotations

import os
import sys

import psutil

RUN_ID_ENV = "SPECSERVE_RUN_ID"


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def run_processes(run_id: str) -> list[psutil.Process]:
    marker = f"{RUN_ID_ENV}={run_id}".encode()
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        if proc.pid != os.getpid() and _has_marker(proc.pid, marker):
            found[proc.pid] = proc
            try:
                found.update((child.pid, child) for child in proc.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
    found.pop(os.getpid(), None)
    return list(found.values())


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
