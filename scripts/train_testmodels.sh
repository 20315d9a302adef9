#!/usr/bin/env bash
# Retrain the shipped test models (cluster/testmodels/weights/, with a manifest), in four steps:
#   bash scripts/train_testmodels.sh data     # here (CPU, ~1 min): corpus, tokenizer, token arrays
#   bash scripts/train_testmodels.sh target   # on a CUDA machine, carrying .gpu/testbed: ~10 min
#   bash scripts/train_testmodels.sh draft    # there too, carrying .gpu/testbed and .gpu/run: ~4 min
#   bash scripts/train_testmodels.sh ship     # here, with the draft step's output in .gpu/run2
# Two GPU steps because a lent GPU runs one command for 10 minutes at most. The CUDA machine
# needs torch, transformers, tokenizers, safetensors and numpy (not vLLM or Ray); here the
# project's .venv has all of them. Time caps bound both loops (their schedules anneal by them).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=${WORK:-.gpu}
case "${1:-}" in
  data) "${PYTHON:-.venv/bin/python}" -m cluster.testmodels.dataset --out "$work/testbed" ;;
  # The target (its 1500 steps of copy rows, then the mix, 320 s in all); its draft is discarded.
  target) "$python" -m cluster.testmodels.train --data "$work/testbed" --out "$work/run" \
    --set target_steps=40000 copy_warmup_steps=1500 max_target_s=320 draft_steps=0 ;;
  # The draft, distilled from that target for 150 s.
  draft) "$python" -m cluster.testmodels.train --data "$work/testbed" --out "$work/run2" \
    --set init_target="$work/run/target.safetensors" target_steps=0 draft_steps=40000 max_draft_s=150 ;;
  ship) "${PYTHON:-.venv/bin/python}" -m cluster.testmodels.weights ship "$work/run2" --data "$work/testbed" \
    --command "bash scripts/train_testmodels.sh data|target|draft|ship" ;;
  *) echo "usage: $0 data|target|draft|ship" >&2; exit 2 ;;
esac
