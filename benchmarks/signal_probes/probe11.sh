#!/usr/bin/env bash
# Run from the repo root on the GPU machine, with the `paper` preset's benchmark cell carried in runs/bench (as for
# probe10.sh): OUT=DIR LIMIT=450 [STEPS=5000] bash benchmarks/signal_probes/probe11.sh. A rerun on the same warm
# machine resumes the studies and skips finished symbolic arms. The arms that start late stop at LIMIT s from the
# probe's start, so the packing still fits the call.
# Probe 11 for issue 21. Probe 10 found the LLM blind to the image on existence questions even when trained on them
# alone, and a 2-layer LLM localizing far better than the preset's 8 layers. On the CPU a 2-layer Llama read a
# perfect image for existence questions once its weights started at std 1/sqrt(width) (0.088) instead of Llama's
# 0.02 (init_probe.py), and in the VLM stage's mixed question stream with the scene's ground truth as the image
# (batch 32, 6,000 steps) the loss averaged per answer (`optim.loss_reduction: sample`) took ShapeScenes-POPE from
# 50.7 to 73.3 at that std, Loc from 22.0 to 9.7; `sqrt` (each token of an n-token answer weighs 1/sqrt(n)) gave
# POPE 71.0 with Loc 18.0.
# Symbolic arms (symbolic_probe.py: one-hot scene grid, fresh connector; 5,000 steps at the preset's batch 128 and
# lr 2.8e-3; baselines: probe 10's `base` and `deep2`), 2-layer LLM at std 0.088: `d2_sample` and `d2_sqrt` (the
# loss per answer, or `sqrt`).
# Study arms on VMamba nano (classification init, seed 0, no ablation), from one pretraining cell: `plain` (the
# preset, this card's baseline), `d2i` (llm=tiny-llama-2l at std 0.088), `d2i_sample` and `d2i_sqrt` (+ the loss
# per answer, or `sqrt`), and `ln_sample`, `ln_sqrt` (the same with `model.connector_norm`: the encoder's tokens,
# at norms 14-91 against word embeddings near 1, layer-normed before the connector).
source benchmarks/signal_probes/common.sh
probe_setup probe11
COMMON=(--batch 128 --steps "${STEPS:-5000}" --lr 2.8e-3 --threads 1 --init-std 0.088)
D2=(--llm-shape 128,2,4)
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=1)
D2I=(llm=tiny-llama-2l recipe.overrides.model.llm_init_std=0.088)
study plain
( wait_for_pretraining plain 1
  seed_from plain d2i d2i_sample d2i_sqrt ln_sample ln_sqrt
  LIMIT=$((LIMIT - SECONDS))
  study d2i "${D2I[@]}"
  study d2i_sample "${D2I[@]}" recipe.overrides.optim.loss_reduction=sample
  study d2i_sqrt "${D2I[@]}" recipe.overrides.optim.loss_reduction=sqrt
  study ln_sample "${D2I[@]}" recipe.overrides.optim.loss_reduction=sample recipe.overrides.model.connector_norm=true
  study ln_sqrt "${D2I[@]}" recipe.overrides.optim.loss_reduction=sqrt recipe.overrides.model.connector_norm=true
  wait ) &
symbolic d2_sample runs/bench "${COMMON[@]}" "${D2[@]}" --loss-reduction sample &
symbolic d2_sqrt runs/bench "${COMMON[@]}" "${D2[@]}" --loss-reduction sqrt &
wait
ARMS=(d2_sample d2_sqrt)
python3 benchmarks/signal_probes/summarize.py $(for arm in "${ARMS[@]}"; do echo "$W/$arm"; done) | tee "$W/summary.md"
tar czf "$OUT/symbolic.tgz" "$W/summary.md" "$W/gpu.txt" $(for arm in "${ARMS[@]}"; do echo "$W/$arm.log"
  find "$W/$arm" -path "$W/$arm/tokenizer" -prune -o -name predictions.jsonl -prune \
    -o -type f -print; done)
pack probe11 plain d2i d2i_sample d2i_sqrt ln_sample ln_sqrt
