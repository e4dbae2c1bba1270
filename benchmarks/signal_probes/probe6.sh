#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe6.sh (.whl/ holds
# the wheels that machine lacks, pycocotools). Rerunning it on the same warm machine resumes every study.
# Probe 6 for issue 21, the `paper` preset on VMamba, MambaVision and ViT nano, seed 0, no ablation:
# - `plain`: the classification-initialized cells as the preset has them (the baseline of this call's card);
# - `seg160k`: VMamba and ViT nano's segmentation-adapted encoders at 4x the preset's dense budget (probe 5's
#   40,000 images at 192² left mIoU at 27% / 16% against 11.5% for background only, too weak to tell whether
#   per-location features help the VLM bind a question to one of three objects). The dense pretrainings may not
#   finish inside one call's limit; rerun the script on the same warm machine to resume them.
# Not here: the tied LM head. It took ShapeScenes-POPE from chance to 82 on one-object scenes, but on the
# preset's three-object scenes it moved nothing in two CPU A/Bs (RESULTS, "Yes/no questions").
# The variant starts from copies of `plain`'s dataset and classification pretraining cells (content-addressed).
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
W=runs/probe6; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/gpu.txt
LIMIT=${LIMIT:-560}
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2)
THREE="backbones=[vmamba_nano,mambavision_nano,vit_nano]"
study() { name=$1; shift; ( /usr/bin/time -f "wall %e s" timeout $LIMIT python3 -m ssmvlm.cli study --preset paper \
  --out $W/$name "${SUBSET[@]}" "$@" >> $W/$name.log 2>&1; echo "$name exit $?" >> $W/$name.log ) & }
study plain "$THREE" "initializations=[shapes-cls]" execution.workers_per_gpu=3
( for _ in $(seq 1 $LIMIT); do
    [ "$(ls $W/plain/runs/pretrain/*/DONE 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 1; done
  mkdir -p $W/seg160k/runs; cp -rn $W/plain/runs/dataset $W/plain/runs/pretrain $W/seg160k/runs/
  study seg160k "backbones=[vmamba_nano,vit_nano]" "initializations=[shapes-seg]" pretrain.dense_images_seen=160000 \
    execution.workers_per_gpu=2
  wait ) &
wait
for d in plain seg160k; do [ -f $W/$d/report.md ] || python3 -m ssmvlm.cli study report $W/$d >> $W/$d.log 2>&1; done
python3 benchmarks/signal_probes/summarize.py $W/plain $W/seg160k | tee $W/summary.md
find $W -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name DONE \
  -o -name '*.log' -o -name '*.jsonl' -o -name 'spec.yaml' \) -print | tar czf $OUT/probe6.tgz -T -
grep -h "wall\|exit" $W/*.log; tail -3 $W/plain.log
