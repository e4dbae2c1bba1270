#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe7.sh (set-up and
# helpers: common.sh). Rerunning it on the same warm machine resumes every study.
# Probe 7 for issue 21: one-object scenes in the VLM's training mix (`benchmark.train_mix`), the lever a CPU probe
# pointed to (RESULTS, "Yes/no questions": colour + shape on three-object scenes +13 points over four seeds). The
# `paper` preset on VMamba and ViT nano, classification init, seed 0, no ablation:
# - `plain`: the preset's VLM stage (4,640 steps), the baseline of this call's card;
# - `mix6k`, `mix2k`: 6,000 / 2,000 one-object scenes (7 turns each: 59% / 32% of the training turns) join the
#   training split, at the same 4,640 steps, so the three-object scenes are seen fewer times, not more.
# The test split is the preset's three-object one in every arm. The arms start from copies of `plain`'s dataset
# and pretraining cells (content-addressed), so all six VLM cells read the same two encoders.
source benchmarks/signal_probes/common.sh
probe_setup probe7
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano,vit_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=2)
ONE="{difficulty: easy, min_objects: 1, max_objects: 1, clutter: none, non_square_share: 0.0, vqa_per_image: 6,
  refs_per_image: 3, existence_turns: true}"
study plain
( wait_for_pretraining plain 2
  seed_from plain mix6k mix2k
  for size in 6000 2000; do
    study mix$((size / 1000))k benchmark.train_mix.size=$size "benchmark.train_mix.scene=$ONE" \
      recipe.overrides.optim.max_steps=4640
  done
  wait ) &
wait
pack probe7 plain mix6k mix2k
