#!/usr/bin/env bash
# Issue 25's checks in one GPU call, from the repo root (.whl/ holds liger-kernel and pycocotools, .anchors/ the
# official VMamba code and its prebuilt kernel wheel):  OUT=DIR COMMIT=HASH bash benchmarks/perf_round2.sh
# 1. the GPU tests of the LLM kernels and of the CUDA-graph module;
# 2. side by side with the official code: VMamba-S/T throughput eager and compiled, and the finetune step's MFU
#    with the LLM eager and with Liger's kernels (benchmarks/anchor_vmamba.py);
# 3. where VMamba-S's batch-128 time goes now (eager, bf16 weights, compiled; kernel table).
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=src:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 120 python3 -m pytest -q -p no:randomly -m gpu tests/test_llm_kernels.py tests/test_graphed.py 2>&1 \
  | tail -5 | tee "$OUT/gpu_tests.log"
timeout 300 python3 benchmarks/anchor_vmamba.py --anchors .anchors/vmamba --wheels .anchors/wheels \
  --sections encoders,mfu --compile --mfu-encoders vmamba_small_s2l15 --mfu-kernels eager,liger \
  --out "$OUT/anchor.json" --commit "${COMMIT:-unknown}" > "$OUT/anchor.log" 2>&1
grep -A 30 "^NVIDIA\|^| encoder\|^| finetune" "$OUT/anchor.log" | grep "^|" | uniq
timeout 150 python3 benchmarks/encoder_profile.py -b vmamba_small_s2l15 --batch-size 128 --resolution 224 \
  --modes eager,bf16,compile --profile --top 25 --out "$OUT/profile.json" > "$OUT/profile.log" 2>&1
grep -v "^W1\|^  " "$OUT/profile.log" | tail -40
