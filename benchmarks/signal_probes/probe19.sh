#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=300 bash benchmarks/signal_probes/probe19.sh. Probe 19
# for issue 21: the `paper` preset as it now stands (the in-study LLM warm-up, compiled LLM layers) end to end in
# one study, cut to VMamba nano, classification init, seed 0, no ablation, and pretrained on 160,000 images to fit
# one call: against probe 13's `sqrt_e30` (the same stage from a random LLM at that budget: 69.8 / 77.7 / 35.3).
source benchmarks/signal_probes/common.sh
probe_setup probe19
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]"
  "backbones=[vmamba_nano]" pretrain.images_seen=160000 execution.workers_per_gpu=2)
study v160
wait
pack probe19 v160
for cell in "$W"/v160/runs/*/*/DONE; do echo "$cell $(cat "$cell")"; done
