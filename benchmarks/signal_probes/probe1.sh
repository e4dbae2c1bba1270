#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=500 bash benchmarks/signal_probes/probe1.sh (.whl/ holds
# the wheels that machine lacks, pycocotools). The first probe ran on tree d441b93 with its pretraining default of
# auxiliary targets on: v1-v8 had them; they are off by default since, so rerunning v1-v8 needs
# pretrain.overrides.auxiliary_targets=true.
# Probe 1 for issue 21: quick-preset lever variants, quick-scale learning curves and a paper-scale probe, all at
# once on one GPU machine (device=cuda, one thread per process).
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=/tmp/probe; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
python3 -c "import timm, typer, rich, einops, pandas, matplotlib, scipy, transformers, pycocotools, torch; print('imports ok', torch.__version__)" || exit 1
LIMIT=${LIMIT:-520}
Q="execution.device=cuda execution.threads=1"
run() { name=$1; shift; timeout $LIMIT python3 -m ssmvlm.cli study --preset quick --out $W/$name $Q "$@" > $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log; }
run v0 pretrain.overrides.auxiliary_targets=false &
run v1 &
run v2 pretrain.scenes=8000 &
run v3 pretrain.scenes=8000 pretrain.images_seen=8192 &
run v4 pretrain.scenes=8000 recipe.overrides.optim.epochs=6 &
run v5 pretrain.scenes=8000 benchmark.shapes.size=2000 &
run v6 pretrain.scenes=8000 pretrain.images_seen=8192 recipe.overrides.optim.epochs=6 benchmark.shapes.size=2000 &
run v7 pretrain.scenes=8000 pretrain.batch_size=32 &
run v8 pretrain.scenes=8000 pretrain.overrides.optim.lr=6e-3 &
timeout $LIMIT python3 benchmarks/learning_curves.py --preset quick --out $W/curves --backbones vmamba_nano,vit_nano \
  --pretrain-images 1024,2048,4096,8192,16384 --vlm-epochs 1,2,3,6,12 --jobs 5 --threads 1 \
  --set execution.device=cuda pretrain.scenes=8000 'eval.tasks=[shapes-vqa,shapes-pope,shapes-refexp]' > $W/curves.log 2>&1 &
timeout $LIMIT python3 -m ssmvlm.cli study --preset paper --out $W/paper_probe 'backbones=[vmamba_nano,vit_nano,mambavision_nano]' \
  'initializations=[shapes-cls]' 'seeds=[0]' stabilization.enabled=false pretrain.scenes=40000 pretrain.images_seen=160000 \
  benchmark.shapes.size=8000 benchmark.shapes.scene.vqa_per_image=6 benchmark.shapes.scene.refs_per_image=3 \
  recipe.overrides.optim.epochs=2 execution.gpus=1 execution.workers_per_gpu=3 execution.threads=1 > $W/paper_probe.log 2>&1 &
wait
for d in v0 v1 v2 v3 v4 v5 v6 v7 v8 paper_probe; do [ -f $W/$d/report.md ] || python3 -m ssmvlm.cli study report $W/$d >> $W/$d.log 2>&1; done
python3 - <<'PY'
import glob, json, os
import pandas as pd
rows = []
for d in sorted(glob.glob('/tmp/probe/*/results.csv')):
    t = pd.read_csv(d); name = d.split('/')[-2]
    for _, r in t.iterrows():
        if r['row_type'] in ('model', 'blind', 'prior'):
            rows.append({'run': name, 'backbone': r['backbone'], 'row': r['row_type'], 'top1': r.get('top1'), 'vqa': r.get('vqa'), 'pope': r.get('shapes-pope'), 'loc': r.get('loc')})
t = pd.DataFrame(rows)
t = t[(t.row == 'model') | ~t.duplicated(['run', 'row'])]
print(t.to_string())
for m in glob.glob('/tmp/probe/*/runs/pretrain/*/metrics.json'):
    j = json.load(open(m)); print(m.split('/')[3], j['backbone'], j['images_seen'], {k: round(v, 3) for k, v in j.items() if 'top1' in k or 'f1' in k}, round(j['images_per_second']))
PY
tail -n 30 $W/curves/curves.md 2>/dev/null
tar -czf $OUT/probe1.tar.gz -C $W $(cd $W && find . \( -name '*.log' -o -name 'metrics.json' -o -name 'results.json' -o -name '*.md' -o -name '*.png' -o -name '*.txt' -o -name '*.csv' -o -name 'curves.json' -o -name 'metrics.jsonl' \) -size -4M -not -path '*/data/*')
