#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe5.sh (.whl/ holds
# the wheels that machine lacks, pycocotools). Rerunning it on the same warm machine resumes every study.
# Probe 5 for issue 21, the `paper` preset (image after the question, batch 128, 20 epochs) on VMamba and ViT nano,
# seed 0, no ablation:
# - `inits`: the segmentation-adapted encoders beside the classification ones. Dense adaptation trains every
#   location's features on its object's shape, which the classification encoders carry weakly away from the
#   salient object (shape and yes/no questions sat at chance in probe 4);
# - `b512_e20`: VMamba nano (classification) at batch 512 for 20 epochs (the preset's samples in a quarter of the
#   steps: the VLM cell's wall time, which the tiny LLM's launches set, divided by four if the scores hold);
# - `b512_e5`: the same batch for 5 epochs (a quarter of the samples as well).
# The variants start from copies of `inits`' dataset and classification pretraining cells (content-addressed).
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=runs/probe5; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
LIMIT=${LIMIT:-560}
SUBSET="seeds=[0] stabilization.enabled=false execution.threads=2"
study() { name=$1; shift; ( /usr/bin/time -f "wall %e s" timeout $LIMIT python3 -m ssmvlm.cli study --preset paper \
  --out $W/$name $SUBSET "$@" >> $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log ) & }
study inits 'backbones=[vmamba_nano,vit_nano]' 'initializations=[shapes-cls,shapes-seg]' execution.workers_per_gpu=4
# The variants wait for the two classification pretrainings (the segmentation ones start from them), then reuse them.
( for _ in $(seq 1 $LIMIT); do
    [ "$(ls $W/inits/runs/pretrain/*/DONE 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 1; done
  for name in b512_e5 b512_e20; do mkdir -p $W/$name/runs; cp -rn $W/inits/runs/dataset $W/inits/runs/pretrain $W/$name/runs/; done
  B512="'backbones=[vmamba_nano]' 'initializations=[shapes-cls]' execution.workers_per_gpu=1
    recipe.overrides.optim.global_batch_size=512 recipe.overrides.optim.per_device_batch_size=512
    recipe.overrides.optim.learning_rate=5.6e-3"
  eval study b512_e5 $B512 recipe.overrides.optim.epochs=5
  eval study b512_e20 $B512 recipe.overrides.optim.epochs=20
  wait ) &
wait
for d in inits b512_e5 b512_e20; do [ -f $W/$d/report.md ] || python3 -m ssmvlm.cli study report $W/$d >> $W/$d.log 2>&1; done
python3 benchmarks/signal_probes/summarize.py $W/inits $W/b512_e5 $W/b512_e20 | tee $W/summary.md
find $W -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name DONE \
  -o -name '*.log' -o -name '*.jsonl' -o -name 'spec.yaml' \) -print | tar czf $OUT/probe5.tgz -T -
grep -h "wall\|exit" $W/*.log; tail -3 $W/inits.log
