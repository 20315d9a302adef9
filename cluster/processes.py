"""Find and end the processes of one run, Ray's and vLLM's alike.

`ray stop` leaves vLLM EngineCore/Worker processes behind (they ignore SIGTERM once their
parent is gone), and it would also stop Ray clusters that are not ours. Instead every process
of a run inherits RUN_ID_ENV from the command that started Ray, and is found by it, together
with all its descendants. The environment is read raw from /proc: Ray and vLLM rename their
processes with setproctitle, which zeroes the start of that memory, so psutil's parsed
environ comes back empty for them.

    python -m cluster.processes kill RUN_ID
    python -m cluster.processes drain [RAY_ADDRESS]          # Serve's apps, streams finishing
    python -m cluster.processes stop RUN_ID [RAY_ADDRESS]   # drain, then kill

`drain` is what Ctrl-C or SIGTERM to `scripts/run_local.sh` runs before the kill: `serve run`
alone dies on SIGTERM with a trace and `serve shutdown` cuts streams in flight (it stops the
proxies with the replicas), so the apps are deleted first, which stops each replica the way a downscale does:
after its in-flight requests, up to the config's `shutdown_grace_s`, while the proxies still
carry their streams.
"""

from __future__ import annotations

import os
import sys
import time

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


# Every replica bounds its own drain (graceful_shutdown_timeout_s); this only bounds a stuck controller.
DRAIN_DEADLINE_S = 180.0


def drain_serve(address: str = "auto", deadline_s: float = DRAIN_DEADLINE_S) -> list[str]:
    """Delete every Serve application on the Ray cluster at `address`, waiting until their
    replicas have finished their in-flight requests and stopped, then shut Serve down. Returns
    the applications drained."""
    import ray
    from ray import serve

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        apps = list(serve.status().applications)
        for name in apps:
            serve.delete(name, _blocking=False)
        end = time.monotonic() + deadline_s
        while serve.status().applications and time.monotonic() < end:
            time.sleep(0.5)
        serve.shutdown()
        return apps
    finally:
        ray.shutdown()


def stop_run(run_id: str, address: str = "auto") -> str:
    try:
        drained = f"drained {drain_serve(address)}; "
    except Exception as e:  # Ray already gone, or never up: nothing to drain, processes to end
        drained = f"could not drain ({e!r}); "
    return f"{drained}ended {kill_run(run_id)} process(es) of run {run_id}"


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["kill", run_id]:
            print(f"ended {kill_run(run_id)} process(es) of run {run_id}")
        case ["drain", *address] if len(address) <= 1:
            print(f"drained {drain_serve(*address)}")
        case ["stop", run_id, *address] if len(address) <= 1:
            print(stop_run(run_id, *address))
        case _:
            sys.exit("usage: python -m cluster.processes kill RUN_ID | drain [RAY_ADDRESS] | stop RUN_ID [RAY_ADDRESS]")
