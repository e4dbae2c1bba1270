#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=360 bash benchmarks/signal_probes/probe8.sh (set-up and
# helpers: common.sh).
# Probe 8 for issue 21: the loss averaged per answer instead of per token (`optim.loss_reduction=sample`). In the
# `paper` preset's training split a referring expression's box answer is ~19 tokens and a VQA answer ~3, so under
# the token mean the boxes carry 63% of the gradient while the VQA questions are 78% of the samples. The preset on
# VMamba nano, classification init, seed 0, no ablation: `plain` (the preset) and `sample` side by side, both
# from the same pretraining cell.
source benchmarks/signal_probes/common.sh
probe_setup probe8
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=1)
study plain
( wait_for_pretraining plain 1
  seed_from plain sample
  study sample recipe.overrides.optim.loss_reduction=sample
  wait ) &
wait
pack probe8 plain sample
