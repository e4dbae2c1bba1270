#!/usr/bin/env bash
# One GPU session's worth of checks and benchmarks, run from the repo root on a CUDA machine:
#   OUT=/some/dir bash benchmarks/gpu_suite.sh [part ...]
# Parts: scan scanbench backbones encoders pretrain train (default: all). Each part has its own time limit and the
# suite goes on when one fails, so a single call brings back every result. Work happens in $WORK; the
# logs, JSON, Markdown and plots (no weights) are packed into $OUT/gpu_suite.tar.gz.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
FINAL=${OUT:-gpu_suite_out}
OUT=${WORK:-/tmp/gpu_suite}
mkdir -p "$OUT" "$FINAL"
parts=${*:-scan scanbench backbones encoders pretrain train}
status=0

run() {  # run NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) ==="
  timeout "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1
  local rc=$?
  echo "=== $name exit $rc ==="
  [ $rc -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for part in $parts; do
  case $part in
    scan)
      run scan_check 130 python3 benchmarks/scan_check.py ;;
    scanbench)
      run scan_bench 120 python3 benchmarks/scan_bench.py --out "$OUT/scan_bench.json" ;;
    backbones)
      run backbone_check 120 python3 benchmarks/backbone_check.py --out "$OUT/backbone_check.json" ;;
    encoders)
      run encoders_224 80 python3 -m ssmvlm.cli bench encoders --batch-size 128 --resolutions 224 --no-flops \
        -b vmamba_tiny_s1l8,vmamba_small_s2l15,vmamba_base_s2l15,vit_small_patch16,vit_base_patch16,swin_tiny_patch4_window7,convnext_tiny,maxvit_tiny_tf \
        --out "$OUT/encoders_224"
      run encoders_scaling 90 python3 -m ssmvlm.cli bench encoders --no-throughput --resolutions 512,1024,2048,4096 \
        --fit-min-tokens 16384 -b vmamba_small_s2l15,vit_base_patch16 --out "$OUT/encoders_scaling" ;;
    pretrain)
      run pretrain_speed 150 python3 benchmarks/pretrain_speed.py --device cuda --scenes 20000 --images-seen 150000 \
        --workers 12 --evals 3 --out "$OUT/pretrain" ;;
    train)
      run train_throughput_tiny 60 python3 benchmarks/train_throughput.py --config tiny --json "$OUT/train_throughput.jsonl"
      run train_throughput_1b 150 python3 benchmarks/train_throughput.py --config 1b --json "$OUT/train_throughput.jsonl" ;;
  esac
done
tar -czf "$FINAL/gpu_suite.tar.gz" -C "$OUT" \
  $(cd "$OUT" && find . \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' \
    -o -name '*.txt' \) -size -4M -not -path '*/checkpoint/*' -not -name 'llava.json' -not -name 'scenes.json' \
    -not -name 'instances.json' -not -name 'vqa_*.json' -not -name 'refs.json' -not -name 'classification.json' \
    -not -path '*/images/*' -not -path '*/masks/*')
exit $status
