#!/usr/bin/env bash
# Run from the repo root on the GPU machine, with the `paper` preset's benchmark cell carried in runs/bench (as for
# probe10.sh): OUT=DIR LIMIT=330 [STEPS=5000] bash benchmarks/signal_probes/probe11.sh. A rerun on the same warm
# machine skips finished arms.
# Probe 11 for issue 21. Probe 10 found the LLM blind to the image on existence questions even when trained on them
# alone, and a 2-layer LLM localizing far better than the preset's 8 layers. On the CPU (init_probe.py) a 2-layer
# Llama read a perfect image for one-attribute existence questions once its weights started at std 1/sqrt(width)
# (0.088) instead of Llama's 0.02 (held-out accuracy 88.7% against 50.7%), and less well with the answer read from
# the last image token (60.0%). Five symbolic_probe.py arms (one-hot scene grid, fresh connector; 5,000 steps at
# the preset's batch 128 and lr 2.8e-3; baselines: probe 10's `base`, `deep2` and `exist`): `init` (the preset's
# LLM at std 0.088), `init_tag` (+ the image before the answer tag: `model.image_position: before-answer`),
# `d2_init` and `d2_init_tag` (the same on 2 layers), and `exist_init` (probe 10's `exist` at std 0.088).
source benchmarks/signal_probes/common.sh
probe_setup probe11
COMMON=(--batch 128 --steps "${STEPS:-5000}" --lr 2.8e-3 --threads 2 --init-std 0.088)
D2=(--llm-shape 128,2,4)
symbolic init runs/bench "${COMMON[@]}" &
symbolic init_tag runs/bench "${COMMON[@]}" --image-position before-answer &
symbolic d2_init runs/bench "${COMMON[@]}" "${D2[@]}" &
symbolic d2_init_tag runs/bench "${COMMON[@]}" "${D2[@]}" --image-position before-answer &
symbolic exist_init runs/bench "${COMMON[@]}" --cells words --questions '^Is there' &
wait
ARMS=(init init_tag d2_init d2_init_tag exist_init)
python3 benchmarks/signal_probes/summarize.py $(for arm in "${ARMS[@]}"; do echo "$W/$arm"; done) | tee "$W/summary.md"
tar czf "$OUT/probe11.tgz" "$W/summary.md" "$W/gpu.txt" $(for arm in "${ARMS[@]}"; do echo "$W/$arm.log"
  find "$W/$arm" -path "$W/$arm/tokenizer" -prune -o -name predictions.jsonl -prune -o -type f -print; done)
