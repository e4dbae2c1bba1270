#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe4.sh (.whl/ holds
# the wheels that machine lacks, pycocotools). Rerunning it on the same warm machine resumes every study.
# Probe 4 for issue 21: the image after the question (model.image_position=after-question) on the `paper` preset,
# three families, classification init, seed 0, no ablation; beside it, in the same call, the preset's layout
# (after BOS) on VMamba nano and the new layout at batch 128 for 10 epochs. The variants' studies start from
# copies of the first study's dataset and pretraining cells (cells are content-addressed, so they are reused).
# The preset's VLM stage of then (batch 32, lr 1.4e-3, 5 epochs, image after BOS) is written out below: the preset
# has changed since (from this probe). The two later calls of the probe, batch 128 for 20 epochs after the question
# and after BOS, are in docs/results/paper_probe4_h100/README.md.
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=runs/probe4; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
LIMIT=${LIMIT:-560}
SUBSET="initializations=[shapes-cls] seeds=[0] stabilization.enabled=false execution.threads=2
  recipe.overrides.optim.epochs=5 recipe.overrides.optim.global_batch_size=32
  recipe.overrides.optim.per_device_batch_size=32 recipe.overrides.optim.learning_rate=1.4e-3
  recipe.overrides.model.image_position=after-bos"
study() { name=$1; shift; ( /usr/bin/time -f "wall %e s" timeout $LIMIT python3 -m ssmvlm.cli study --preset paper \
  --out $W/$name $SUBSET "$@" > $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log ) & }
study qa 'backbones=[vmamba_nano,mambavision_nano,vit_nano]' execution.workers_per_gpu=3 \
  recipe.overrides.model.image_position=after-question
# The variants wait for the three pretrainings, then reuse them.
( for _ in $(seq 1 $LIMIT); do
    [ "$(ls $W/qa/runs/pretrain/*/DONE 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 1; done
  for name in bos qa_b128; do mkdir -p $W/$name/runs; cp -rn $W/qa/runs/dataset $W/qa/runs/pretrain $W/$name/runs/; done
  study bos 'backbones=[vmamba_nano]' execution.workers_per_gpu=1
  study qa_b128 'backbones=[vmamba_nano,vit_nano]' execution.workers_per_gpu=2 \
    recipe.overrides.model.image_position=after-question recipe.overrides.optim.epochs=10 \
    recipe.overrides.optim.global_batch_size=128 recipe.overrides.optim.per_device_batch_size=128 \
    recipe.overrides.optim.learning_rate=2.8e-3
  wait ) &
wait
for d in qa bos qa_b128; do [ -f $W/$d/report.md ] || python3 -m ssmvlm.cli study report $W/$d >> $W/$d.log 2>&1; done
python3 benchmarks/signal_probes/summarize.py $W/qa $W/bos $W/qa_b128 | tee $W/summary.md
find $W -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name DONE \
  -o -name '*.log' \) -print | tar czf $OUT/probe4.tgz -T -
tail -5 $W/qa.log $W/bos.log $W/qa_b128.log
