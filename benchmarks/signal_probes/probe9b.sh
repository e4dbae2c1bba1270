#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=450 bash benchmarks/signal_probes/probe9b.sh (set-up and
# helpers: common.sh). Probe 9's `plain`, `sym` and `symllm` arms (probe9.sh) on ViT nano: does the LLM trained on
# the scenes' ground truth help a transformer encoder's VLM as it helped VMamba nano's?
source benchmarks/signal_probes/common.sh
probe_setup probe9b
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vit_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=2)
study plain
BENCH=$(benchmark_data plain)
symbolic sym "$BENCH" --batch 128 --threads 1 --steps 4640 --lr 2.8e-3 --save-llm
wait_for_pretraining plain 1
seed_from plain symllm
[ -d "$W/sym/llm" ] && study symllm "llm=$PWD/$W/sym/llm"
wait
tail -1 "$W/sym.log"
tar czf "$OUT/symbolic.tgz" "$W/sym.log" $(find "$W/sym" -path "$W/sym/tokenizer" -prune -o -type f -print)
pack probe9b plain symllm
