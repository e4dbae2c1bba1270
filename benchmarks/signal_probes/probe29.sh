#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe29.sh, twice on one
# warm machine (the second call resumes what the first's limit stopped). Probe 29 for issue 21:
# 1. `all`: the `paper` preset's classification-init slice as it is now, with the auxiliary pretraining targets
#    (probe 28 measured them on five families' VLMs, two of them at one seed): all seven families, VLM seeds 0-2, no
#    ablation. Probe 24 is the same slice without the targets.
# 2. `budget_*`: Swin and ViT nano pretrained with the targets at 1.5 times the preset's images (720,000), four
#    held-out evaluations, on the same scenes: whether 1.5 times is enough for Swin's 70% (probe 28: 64.1% at
#    480,000 with the targets; 81.3% at 640,000 of a 960,000-image schedule without them).
# 3. `compile-all`'s VLM step time against `compile` (the preset), six processes and one, once `all` is done and the
#    limit leaves time: six processes on the card are device-bound (probe 24: 677 steps/s against 1.63 ms of kernels a
#    step), and the full preset's estimated ~30 min rest on that rate.
source benchmarks/signal_probes/common.sh
probe_setup probe29
DEADLINE=$(( $(date +%s) + LIMIT ))
SUBSET=("seeds=[0,1,2]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]")
study all "backbones=[swin_nano,vit_nano,vmamba_nano,maxvit_nano,convnext_nano,mambavision_nano,vim_nano]" \
  execution.workers_per_gpu=8
budget_pretrain swin_nano 720000 all &
budget_pretrain vit_nano 720000 all &
wait
pack probe29 all
pack_budgets swin_nano vit_nano
grep -q "all exit 0" "$W/all.log" && step_speed "$(benchmark_data all)"
for cell in "$W"/all/runs/*/*/DONE; do echo "$cell $(tr -d '\n ' < "$cell")"; done
