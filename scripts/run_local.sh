#!/usr/bin/env bash
# Install, build the test models (cached), start Ray and serve configs/local.yaml on
# http://127.0.0.1:8000 until Ctrl-C; then end every Ray and vLLM process this run started.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-configs/local.yaml}"
bash scripts/install.sh cpu
. .venv/bin/activate
python -m cluster.testmodels.build
python -m serve_app.check "$config"

# The control routes' key (configs/local.yaml: ingress.access.control_keys_env).
if [ -z "${SPECSERVE_CONTROL_KEY:-}" ]; then
  (umask 077; python -c 'import secrets; print(secrets.token_urlsafe(24))' > .cache/control_key)
  SPECSERVE_CONTROL_KEY="$(cat .cache/control_key)"
  echo "control key for POST /v1/spec/tuner/pin (Authorization: Bearer KEY): in .cache/control_key"
fi
export SPECSERVE_CONTROL_KEY
export SPECSERVE_RUN_ID="${SPECSERVE_RUN_ID:-run-$$-$(date +%s)}"  # a caller may name the run, to end it itself
trap 'python -m cluster.processes kill "$SPECSERVE_RUN_ID"' EXIT
# The app needs more logical CPUs than a laptop has cores (ingress + one bundle per engine);
# they are scheduling units only, the engines share the real cores.
export RAY_SERVE_CONTROL_LOOP_INTERVAL_S="${RAY_SERVE_CONTROL_LOOP_INTERVAL_S:-0.5}"  # 0.1 s by default: 6% of a core while idle
ray start --head --num-cpus=16 --metrics-export-port=8080 --include-dashboard=false --disable-usage-stats
# In the background, so the signal reaches the trap rather than `serve run` (a background job
# of a script ignores Ctrl-C; on SIGTERM `serve run` would die with a trace, draining nothing).
serve run --address auto "$config" &
serve_pid=$!
# Ctrl-C or SIGTERM (a process manager, a container stop): requests in flight finish (up to the
# config's shutdown_grace_s), then the EXIT trap ends every process of the run. The drained
# `serve run` has nothing left to do; SIGKILL, since on SIGTERM Ray's handler prints a stack trace.
trap 'python -m cluster.processes drain; kill -KILL "$serve_pid"; wait "$serve_pid" 2>/dev/null; exit 0' INT TERM
wait "$serve_pid"
