#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe27.sh, again on
# the same warm machine until it prints the table (each point's study resumes from its finished cells). Probe 27
# for issue 21: the learning curves of the `paper` preset as it is now (its curves in RESULTS are from tree
# `083d6e0`, before the 2-layer LLM, the warm-up, the 480,000 pretraining images and the model frame), for VMamba
# and ViT nano at seed 0:
# - the pretraining axis: 120,000, 240,000 and 480,000 images (the preset's), the VLM stage at the preset's 30
#   epochs;
# - the VLM axis: 10, 20, 30 and 45 epochs, the pretraining at the preset's 480,000 images; the LLM warm-up pinned
#   at 30 epochs, so every point starts from the same warmed-up LLM and only the VLM stage's budget moves.
# benchmarks/learning_curves.py marks where each curve saturates (within 2 points of its best).
source benchmarks/signal_probes/common.sh
probe_setup probe27
timeout "$LIMIT" python3 benchmarks/learning_curves.py --preset paper --out "$W/curves" \
  --backbones vmamba_nano,vit_nano --pretrain-images 120000,240000,480000 --vlm-epochs 10,20,30,45 \
  --jobs 2 --threads 2 --set llm_warmup.epochs=30 execution.workers_per_gpu=3 2>&1 | tail -30 | tee "$W/curves.log"
tar czf "$OUT/curves.tgz" "$W/gpu.txt" "$W/curves.log" $(find "$W/curves" -maxdepth 1 -type f) \
  $(find "$W/curves" -path '*/runs/dataset' -prune -o \( -name 'results.csv' -o -name 'report.md' \) -print)
