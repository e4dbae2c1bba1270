#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=360 bash benchmarks/signal_probes/probe8.sh (.whl/ holds
# the wheels that machine lacks, pycocotools).
# Probe 8 for issue 21: the loss averaged per answer instead of per token (`optim.loss_reduction=sample`). In the
# `paper` preset's training split a referring expression's box answer is ~19 tokens and a VQA answer ~3, so under
# the token mean the boxes carry 63% of the gradient while the VQA questions are 78% of the samples. The preset on
# VMamba nano, classification init, seed 0, no ablation: `plain` (the preset) and `sample` side by side, both
# from the same pretraining cell.
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=runs/probe8; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
LIMIT=${LIMIT:-360}
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=1)
study() { name=$1; shift; ( /usr/bin/time -f "wall %e s" timeout $LIMIT python3 -m ssmvlm.cli study --preset paper \
  --out $W/$name "${SUBSET[@]}" "$@" >> $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log ) & }
study plain
( for _ in $(seq 1 $LIMIT); do [ -f $W/plain/runs/pretrain/*/DONE ] 2>/dev/null && break; sleep 1; done
  mkdir -p $W/sample/runs; cp -rn $W/plain/runs/dataset $W/plain/runs/pretrain $W/sample/runs/
  study sample recipe.overrides.optim.loss_reduction=sample
  wait ) &
wait
python3 benchmarks/signal_probes/summarize.py $W/plain $W/sample | tee $W/summary.md
find $W -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name DONE \
  -o -name '*.log' -o -name '*.jsonl' -o -name 'spec.yaml' \) -print | tar czf $OUT/probe8.tgz -T -
grep -h "wall\|exit" $W/*.log
