#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe7.sh (.whl/ holds
# the wheels that machine lacks, pycocotools). Rerunning it on the same warm machine resumes every study.
# Probe 7 for issue 21: one-object scenes in the VLM's training mix (`benchmark.train_mix`), the lever a CPU probe
# pointed to (RESULTS, "Yes/no questions": colour + shape on three-object scenes +13 points over four seeds). The
# `paper` preset on VMamba and ViT nano, classification init, seed 0, no ablation:
# - `plain`: the preset's VLM stage (4,640 steps), the baseline of this call's card;
# - `mix6k`, `mix2k`: 6,000 / 2,000 one-object scenes (7 turns each: 59% / 32% of the training turns) join the
#   training split, at the same 4,640 steps, so the three-object scenes are seen fewer times, not more.
# The test split is the preset's three-object one in every arm. The arms start from copies of `plain`'s dataset
# and pretraining cells (content-addressed), so all six VLM cells read the same two encoders.
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=runs/probe7; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
LIMIT=${LIMIT:-560}
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano,vit_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=2)
ONE="{difficulty: easy, min_objects: 1, max_objects: 1, clutter: none, non_square_share: 0.0, vqa_per_image: 6,
  refs_per_image: 3, existence_turns: true}"
study() { name=$1; shift; ( /usr/bin/time -f "wall %e s" timeout $LIMIT python3 -m ssmvlm.cli study --preset paper \
  --out $W/$name "${SUBSET[@]}" "$@" >> $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log ) & }
study plain
( for _ in $(seq 1 $LIMIT); do
    [ "$(ls $W/plain/runs/pretrain/*/DONE 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 1; done
  for size in 6000 2000; do
    name=mix$((size / 1000))k; mkdir -p $W/$name/runs; cp -rn $W/plain/runs/dataset $W/plain/runs/pretrain $W/$name/runs/
    study $name benchmark.train_mix.size=$size "benchmark.train_mix.scene=$ONE" recipe.overrides.optim.max_steps=4640
  done
  wait ) &
wait
for d in plain mix6k mix2k; do [ -f $W/$d/report.md ] || python3 -m ssmvlm.cli study report $W/$d >> $W/$d.log 2>&1; done
python3 benchmarks/signal_probes/summarize.py $W/plain $W/mix6k $W/mix2k | tee $W/summary.md
find $W -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name DONE \
  -o -name '*.log' -o -name '*.jsonl' -o -name 'spec.yaml' \) -print | tar czf $OUT/probe7.tgz -T -
grep -h "wall\|exit" $W/*.log; tail -3 $W/plain.log
