#!/usr/bin/env bash
# Run from the repo root on the GPU machine, with the `paper` preset's benchmark cell carried in runs/bench (as for
# probe10.sh): OUT=DIR LIMIT=540 [STEPS=5000] bash benchmarks/signal_probes/probe11.sh. A rerun on the same warm
# machine resumes the studies and skips finished symbolic arms. The arms that start late stop at LIMIT s from the
# probe's start, so the packing still fits the call.
# Probe 11 for issue 21. Probe 10 found the LLM blind to the image on existence questions even when trained on them
# alone, and a 2-layer LLM localizing far better than the preset's 8 layers. On the CPU (init_probe.py) a 2-layer
# Llama read a perfect image for one-attribute existence questions once its weights started at std 1/sqrt(width)
# (0.088) instead of Llama's 0.02 (held-out accuracy 88.7% against 50.7%).
# Symbolic arms (symbolic_probe.py: one-hot scene grid, fresh connector; 5,000 steps at the preset's batch 128 and
# lr 2.8e-3; baselines: probe 10's `base`, `deep2` and `exist`), all at std 0.088: `init` (the preset's LLM),
# `d2_init` (2 layers; its LLM is kept for `d2i_warm`), `d2_init_tag` (+ the image before the answer tag:
# `model.image_position: before-answer`), `exist_d2` (2 layers, existence questions alone).
# Study arms on VMamba nano (classification init, seed 0, no ablation), from one pretraining cell: `plain` (the
# preset, this card's baseline), `d2i` (llm=tiny-llama-2l at std 0.088), `d2i_tag` (+ the image before the answer
# tag), `d2i_warm` (the VLM stage starting from `d2_init`'s trained LLM).
source benchmarks/signal_probes/common.sh
probe_setup probe11
COMMON=(--batch 128 --steps "${STEPS:-5000}" --lr 2.8e-3 --threads 1 --init-std 0.088)
D2=(--llm-shape 128,2,4)
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=1)
D2I=(llm=tiny-llama-2l recipe.overrides.model.llm_init_std=0.088)
study plain
( wait_for_pretraining plain 1
  seed_from plain d2i d2i_tag d2i_warm
  LIMIT=$((LIMIT - SECONDS)) study d2i "${D2I[@]}"
  LIMIT=$((LIMIT - SECONDS)) study d2i_tag "${D2I[@]}" recipe.overrides.model.image_position=before-answer
  wait ) &
( symbolic d2_init runs/bench "${COMMON[@]}" "${D2[@]}" --save-llm
  wait_for_pretraining plain 1
  [ -d "$W/d2_init/llm" ] && LIMIT=$((LIMIT - SECONDS)) study d2i_warm "llm=$PWD/$W/d2_init/llm"
  wait ) &
symbolic init runs/bench "${COMMON[@]}" &
symbolic d2_init_tag runs/bench "${COMMON[@]}" "${D2[@]}" --image-position before-answer &
symbolic exist_d2 runs/bench "${COMMON[@]}" "${D2[@]}" --questions '^Is there' &
wait
ARMS=(init d2_init d2_init_tag exist_d2)
python3 benchmarks/signal_probes/summarize.py $(for arm in "${ARMS[@]}"; do echo "$W/$arm"; done) | tee "$W/summary.md"
tar czf "$OUT/symbolic.tgz" "$W/summary.md" "$W/gpu.txt" $(for arm in "${ARMS[@]}"; do echo "$W/$arm.log"
  find "$W/$arm" -path "$W/$arm/llm" -prune -o -path "$W/$arm/tokenizer" -prune -o -name predictions.jsonl -prune \
    -o -type f -print; done)
pack probe11 plain d2i d2i_tag d2i_warm
