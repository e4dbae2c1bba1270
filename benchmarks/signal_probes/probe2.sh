#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=470 bash benchmarks/signal_probes/probe2.sh (.whl/ holds
# the wheels that machine lacks, pycocotools). It ran the quick preset with optim.lr 8e-3; the committed preset has 4e-3.
# Probe 2 for issue 21: the new quick preset, quick-scale learning curves (two families, POPE included) and
# paper-scale runs (three families, cls init, one seed), at once on one GPU machine.
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=/tmp/probe; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
LIMIT=${LIMIT:-500}
Q="execution.device=cuda execution.threads=1 execution.cpu_workers=1"
run() { name=$1; shift; timeout $LIMIT python3 -m ssmvlm.cli study --preset quick --out $W/$name $Q "$@" > $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log; }
run quick &
run quick16k pretrain.images_seen=16384 &
timeout $LIMIT python3 benchmarks/learning_curves.py --preset quick --out $W/curves --backbones vmamba_nano,vit_nano \
  --pretrain-images 2048,4096,8192,16384,32768 --vlm-epochs 1,2,4,8 --jobs 4 --threads 1 \
  --set execution.device=cuda execution.cpu_workers=1 'eval.tasks=[shapes-vqa,shapes-pope,shapes-refexp]' > $W/curves.log 2>&1 &
paper() { name=$1; shift; timeout $LIMIT python3 -m ssmvlm.cli study --preset paper --out $W/$name 'initializations=[shapes-cls]' 'seeds=[0]' \
  stabilization.enabled=false pretrain.scenes=40000 pretrain.images_seen=160000 benchmark.shapes.size=8000 \
  benchmark.shapes.scene.vqa_per_image=6 benchmark.shapes.scene.refs_per_image=3 recipe.overrides.optim.epochs=2 \
  execution.gpus=1 execution.threads=1 "$@" > $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log; }
paper paper_a 'backbones=[vmamba_nano,mambavision_nano,vit_nano]' execution.workers_per_gpu=3 &
paper paper_b 'backbones=[vmamba_nano,vit_nano]' pretrain.overrides.optim.lr=1.0e-3 execution.workers_per_gpu=2 &
wait
for d in quick quick16k paper_a paper_b; do [ -f $W/$d/report.md ] || python3 -m ssmvlm.cli study report $W/$d >> $W/$d.log 2>&1; done
python3 - <<'PY'
import glob, json
import pandas as pd
rows = []
for d in sorted(glob.glob('/tmp/probe/*/results.csv')):
    t = pd.read_csv(d); name = d.split('/')[-2]
    for _, r in t.iterrows():
        if r['row_type'] in ('model', 'blind', 'prior'):
            rows.append({'run': name, 'backbone': r['backbone'], 'row': r['row_type'], 'top1': r.get('top1'), 'vqa': r.get('vqa'), 'pope': r.get('task:shapes-pope'), 'loc': r.get('loc'), 'ci': (r.get('vqa_ci_low'), r.get('vqa_ci_high'), r.get('loc_ci_low'), r.get('loc_ci_high'))})
t = pd.DataFrame(rows)
print(t[(t.row == 'model') | ~t.duplicated(['run', 'row'])].round(1).to_string())
for m in sorted(glob.glob('/tmp/probe/*/runs/pretrain/*/metrics.json')):
    j = json.load(open(m)); print(m.split('/')[3], j['backbone'], j['images_seen'], round(j['top1'], 3), round(j['images_per_second']))
PY
tail -n 25 $W/curves/curves.md 2>/dev/null
tar -czf $OUT/probe2.tar.gz -C $W $(cd $W && find . \( -name '*.log' -o -name 'metrics.json' -o -name 'results.json' -o -name '*.md' -o -name '*.png' -o -name '*.txt' -o -name '*.csv' -o -name 'curves.json' -o -name 'metrics.jsonl' -o -name '*.html' -o -name 'spec.yaml' -o -name 'run.json' -o -name 'events.jsonl' \) -size -4M -not -path '*/data/*' -not -path '*/runs/*/*/checkpoints/*')
