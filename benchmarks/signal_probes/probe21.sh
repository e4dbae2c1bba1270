#!/usr/bin/env bash
# Run from the repo root on the GPU machine after probe20.sh, on the same warm machine (it copies probe 20's
# benchmark, encoders and warmed-up LLM): OUT=DIR LIMIT=480 bash benchmarks/signal_probes/probe21.sh. Probe 21 for
# issue 21, the separation test on four of the seven families: the `paper` preset's VLM stage (warmed-up LLM, 30
# epochs) at the VLM seeds 0, 1 and 2 for VMamba, ViT and Swin nano (probe 20's encoders) and MaxViT nano
# (pretrained here), classification init, no ablation.
source benchmarks/signal_probes/common.sh
probe_setup probe21
SUBSET=("seeds=[0,1,2]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]")
seed_with_warmup_from ../probe20/base sep 2>/dev/null
study sep "backbones=[vmamba_nano,vit_nano,swin_nano,maxvit_nano]" execution.workers_per_gpu=8
wait
pack probe21 sep
for cell in "$W"/sep/runs/train/*/DONE "$W"/sep/runs/pretrain/*/DONE; do echo "$cell $(cat "$cell")"; done
