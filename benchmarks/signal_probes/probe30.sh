#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe30.sh (one call;
# SWIN=0 leaves arm 2 out, for a call too short to share the card).
# Probe 30 for issue 21, probe 29 cut to what one call of a session's remaining device time holds:
# 1. `aux2`: the `paper` preset's classification-init slice as it is now (auxiliary pretraining targets on) for the
#    two families whose seed-0 Loc in probe 28 lay furthest apart from their probe-24 value, MambaVision nano
#    (34.0) and ConvNeXt nano (58.7), at VLM seeds 0-2, no ablation. With probe 28's arm 1 (Swin, ViT and VMamba
#    nano, seeds 0-2, the same spec but for its four held-out evaluations during pretraining) that gives five
#    families at three seeds: the best encoder's Loc against the 50 target, and the separation pairs.
# 2. `budget_swin_nano`: Swin nano pretrained with the targets at 1.5 times the preset's images (720,000), four
#    held-out evaluations, on the same scenes: whether 1.5 times is enough for its 70% (probe 28: 64.1% at 480,000).
source benchmarks/signal_probes/common.sh
probe_setup probe30
DEADLINE=$(( $(date +%s) + LIMIT ))
SUBSET=("seeds=[0,1,2]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]")
study aux2 "backbones=[convnext_nano,mambavision_nano]" execution.workers_per_gpu=7
[ "${SWIN:-1}" = 1 ] && budget_pretrain swin_nano 720000 aux2 &
wait
pack probe30 aux2
pack_budgets swin_nano
for cell in "$W"/aux2/runs/*/*/DONE; do echo "$cell $(tr -d '\n ' < "$cell")"; done
