#!/usr/bin/env bash
# Probe 7b, on the machine probe7.sh just ran on (its runs/probe7 folder): the preset's VLM stage and the
# 2,000-scene one-object mix at 1.5x the steps (6,960), VMamba and ViT nano, from copies of probe 7's dataset and
# pretraining cells. OUT=DIR LIMIT=500 bash benchmarks/signal_probes/probe7b.sh
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
W=runs/probe7; LIMIT=${LIMIT:-500}
[ -d $W/plain/runs/pretrain ] || { echo "no probe 7 folder: run probe7.sh first"; exit 1; }
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano,vit_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=2 recipe.overrides.optim.max_steps=6960)
ONE="{difficulty: easy, min_objects: 1, max_objects: 1, clutter: none, non_square_share: 0.0, vqa_per_image: 6,
  refs_per_image: 3, existence_turns: true}"
study() { name=$1; shift; mkdir -p $W/$name/runs; cp -rn $W/mix2k/runs/dataset $W/plain/runs/pretrain $W/$name/runs/
  ( /usr/bin/time -f "wall %e s" timeout $LIMIT python3 -m ssmvlm.cli study --preset paper --out $W/$name \
    "${SUBSET[@]}" "$@" >> $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log ) & }
study plain7k
study mix2k7k benchmark.train_mix.size=2000 "benchmark.train_mix.scene=$ONE"
wait
for d in plain7k mix2k7k; do [ -f $W/$d/report.md ] || python3 -m ssmvlm.cli study report $W/$d >> $W/$d.log 2>&1; done
python3 benchmarks/signal_probes/summarize.py $W/plain7k $W/mix2k7k | tee $W/summary7b.md
find $W/plain7k $W/mix2k7k -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' \
  -o -name DONE -o -name '*.log' -o -name '*.jsonl' -o -name 'spec.yaml' \) -print | tar czf $OUT/probe7b.tgz -T - $W/*7k.log
grep -h "wall\|exit" $W/*7k.log
