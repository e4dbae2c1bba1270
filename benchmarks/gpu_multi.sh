#!/usr/bin/env bash
# The multi-GPU session (4 GPUs), from the repo root:
#   OUT=/some/dir bash benchmarks/gpu_multi.sh [checks] [pretrain] [study]
#   checks: at once, on separate GPUs: DDP and FSDP2 equivalence (GPUs 0-1), training throughput/MFU (GPU 2),
#           the full selective-scan check (GPU 3);
#   pretrain: matched classification pretraining of the 7 nanos (benchmarks/pretrain_speed.py), one group of
#           backbones per GPU so that each is timed alone on its card;
#   study:  the `paper` study on all 4 GPUs, then its report (rebuilt from whatever finished if time ran out).
# Work happens in $WORK; logs, JSON, Markdown, CSV, HTML and PNG files are packed into $OUT/gpu_multi.tar.gz.
set -u
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # keeps carried wheels (/tmp/site) importable
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
FINAL=${OUT:-gpu_multi_out}
OUT=${WORK:-/tmp/gpu_multi}
STUDY_LIMIT=${STUDY_LIMIT:-560}
mkdir -p "$OUT" "$FINAL"
parts=${*:-checks study}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [[ " $parts " == *" checks "* ]]; then

( CUDA_VISIBLE_DEVICES=0,1 timeout 100 python3 benchmarks/ddp_equivalence.py --out "$OUT/ddp" --device cuda \
    --nproc 2 --strategy ddp --steps 20 > "$OUT/ddp.log" 2>&1; echo "ddp exit $?" >> "$OUT/ddp.log"
  CUDA_VISIBLE_DEVICES=0,1 timeout 100 python3 benchmarks/ddp_equivalence.py --out "$OUT/fsdp" --device cuda \
    --nproc 2 --strategy fsdp --steps 20 > "$OUT/fsdp.log" 2>&1; echo "fsdp exit $?" >> "$OUT/fsdp.log" ) &
( export CUDA_VISIBLE_DEVICES=2
  timeout 60 python3 benchmarks/train_throughput.py --config tiny --json "$OUT/train_throughput.jsonl" \
    > "$OUT/train_tiny.log" 2>&1; echo "exit $?" >> "$OUT/train_tiny.log"
  timeout 120 python3 benchmarks/train_throughput.py --config 1b --json "$OUT/train_throughput.jsonl" \
    > "$OUT/train_1b.log" 2>&1; echo "exit $?" >> "$OUT/train_1b.log" ) &
( CUDA_VISIBLE_DEVICES=3 timeout 200 python3 benchmarks/scan_check.py > "$OUT/scan_check.log" 2>&1
  echo "exit $?" >> "$OUT/scan_check.log" ) &
wait
tail -n 3 "$OUT"/ddp.log "$OUT"/fsdp.log "$OUT"/train_*.log "$OUT"/scan_check.log
fi

if [[ " $parts " == *" pretrain "* ]]; then
PRETRAIN_ARGS="--device cuda --images-seen ${PRETRAIN_IMAGES:-360000} --evals 6 --workers 8"
python3 benchmarks/pretrain_speed.py $PRETRAIN_ARGS --out "$OUT/pretrain" --generate-only > "$OUT/pretrain_gen.log" 2>&1
gpu=0
for group in vmamba_nano vim_nano,vit_nano mambavision_nano,convnext_nano maxvit_nano,swin_nano; do
  OMP_NUM_THREADS=16 CUDA_VISIBLE_DEVICES=$gpu timeout "${PRETRAIN_LIMIT:-290}" python3 benchmarks/pretrain_speed.py $PRETRAIN_ARGS \
    --backbones "$group" --data "$OUT/pretrain/shapescenes" --out "$OUT/pretrain/gpu$gpu" > "$OUT/pretrain_gpu$gpu.log" 2>&1 &
  gpu=$((gpu + 1))
done
wait
tail -n 12 "$OUT"/pretrain_gen.log "$OUT"/pretrain_gpu*.log
fi

if [[ " $parts " == *" study "* ]]; then
start=$(date +%s)
timeout "$STUDY_LIMIT" python3 -m ssmvlm.cli study --preset paper --out "$OUT/paper" --gpus 4 \
  execution.workers_per_gpu=4 execution.threads=4 > "$OUT/study.log" 2>&1
echo "study exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/study.log"
[ -f "$OUT/paper/report.md" ] || python3 -m ssmvlm.cli study report "$OUT/paper" >> "$OUT/study.log" 2>&1
tail -n 40 "$OUT/study.log"
fi
tar -czf "$FINAL/gpu_multi.tar.gz" -C "$OUT" \
  $(cd "$OUT" && find . \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' \
    -o -name '*.txt' -o -name '*.csv' -o -name '*.html' -o -name '*.yaml' \) -size -4M \
    -not -path '*/checkpoint*' -not -path '*/dataset/*' -not -path '*/shapescenes/*' -not -path '*/images/*' -not -path '*/masks/*' \
    -not -name 'llava.json' -not -name 'predictions.jsonl' -not -path '*/tokenizer/*')
