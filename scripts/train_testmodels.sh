#!/usr/bin/env bash
# Retrain the shipped test models and ship them into cluster/testmodels/weights/ (with a manifest).
#   bash scripts/train_testmodels.sh gpu   # on a CUDA machine: train.py's default recipe, minutes
#   bash scripts/train_testmodels.sh cpu   # on 2 CPU cores: a smaller recipe in three stages, ~50 min
# Needs torch, transformers, tokenizers and safetensors (the project's .venv has them).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
work=${WORK:-.gpu}
"$python" -m cluster.testmodels.dataset --out "$work/testbed"
train() { "$python" -m cluster.testmodels.train --data "$work/testbed" "$@"; }
case "${1:-}" in
  gpu)
    train --out "$work/run"
    ;;
  cpu)
    # 1: copying and the kinds of request on 256-token rows (20 min on 2 cores).
    train --out "$work/stage1" --set target=2,256,768 seq_len=256 batch=16 examples_per_kind=4000 \
      distill_prompts=2000 distill_new_tokens=96 draft_steps=1500 eval_prompts=24 eval_new_tokens=96
    # 2: the same target on 768-token rows, where summaries, passages and tool loops fit (capped at
    # 15 min: 1216 steps on the 2-core box that made the shipped weights).
    train --out "$work/stage2" --set target=2,256,768 init_target="$work/stage1/target.safetensors" \
      copy_warmup_steps=0 target_steps=2200 seq_len=768 batch=12 lr=0.0007 examples_per_kind=4000 \
      max_target_s=900 distill_prompts=1600 distill_new_tokens=96 draft_steps=1300 max_draft_s=420 \
      eval_prompts=16 eval_new_tokens=96
    # 3: a draft distilled on that target's outputs, on short rows where a CPU step is cheap (12 min).
    train --out "$work/run" --set target=2,256,768 init_target="$work/stage2/target.safetensors" \
      copy_warmup_steps=0 target_steps=0 seq_len=256 batch=16 examples_per_kind=2000 distill_prompts=2000 \
      distill_new_tokens=96 draft_steps=1800 max_draft_s=420 eval_prompts=16 eval_new_tokens=96
    ;;
  *) echo "usage: $0 gpu|cpu" >&2; exit 2 ;;
esac
"$python" -m cluster.testmodels.weights ship "$work/run" --data "$work/testbed" --command "bash scripts/train_testmodels.sh $1"
