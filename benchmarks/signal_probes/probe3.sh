#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe3.sh (.whl/ holds
# the wheels that machine lacks, pycocotools). Rerunning it on the same warm machine resumes every study.
# Probe 3 for issue 21: the `paper` preset of 083d6e0 (2 VLM epochs) restricted to three families (classification
# init, one seed, no ablation), and its learning curves for one SSM and one transformer family along both budgets.
# The 5- and 7-epoch points were the same study folder rerun with recipe.overrides.optim.epochs=5 / 7 (epochs=2
# is written out below: the preset has 5 since).
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=runs/probe3; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
LIMIT=${LIMIT:-560}
SUBSET="initializations=[shapes-cls] seeds=[0] stabilization.enabled=false execution.threads=2 recipe.overrides.optim.epochs=2"
( /usr/bin/time -f "wall %e s" timeout $LIMIT python3 -m ssmvlm.cli study --preset paper --out $W/paper3 $SUBSET \
    'backbones=[vmamba_nano,mambavision_nano,vit_nano]' execution.workers_per_gpu=3 > $W/paper3.log 2>&1
  echo "paper3 exit $?" >> $W/paper3.log ) &
timeout $LIMIT python3 benchmarks/learning_curves.py --preset paper --out $W/curves --backbones vmamba_nano,vit_nano \
  --pretrain-images 20000,40000,80000 --vlm-epochs 1,4 --jobs 4 --threads 2 \
  --set execution.workers_per_gpu=1 recipe.overrides.optim.epochs=2 > $W/curves.log 2>&1 &
wait
[ -f $W/paper3/report.md ] || python3 -m ssmvlm.cli study report $W/paper3 >> $W/paper3.log 2>&1
python3 benchmarks/learning_curves.py --preset paper --out $W/curves --backbones vmamba_nano,vit_nano \
  --pretrain-images 20000,40000,80000 --vlm-epochs 1,4 --collect >> $W/curves.log 2>&1
# Reports, tables and each cell's result only: the whole folder (datasets, checkpoints) is too large to come back.
find $W -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name DONE \
  -o -name '*.png' -o -name '*.log' \) -print | tar czf $OUT/probe3.tgz -T -
tail -30 $W/paper3.log; tail -40 $W/curves.log
