#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe22.sh (a rerun on
# the same warm machine resumes what a limit stopped). Probe 22 for issue 21, localization in the model's frame:
# probe 20's loc_errors.py found non-square images' boxes right 0.6 times as often as square ones', and the
# symbolic model, which is given every box exactly in the model frame, stuck at Loc 26: an answer over the raw
# image needs the aspect ratio, which a letterboxed image shows only as padding. With `model.box_frame=model` the
# training answers and the scoring are over the letterboxed square (LLaVA-1.5's padded frame, the paper fork's
# scoring).
# 1. `mf`: the `paper` preset's VLM stage with model.box_frame=model for VMamba, MaxViT and ViT nano, seeds 0-2,
#    classification init, no ablation (probe 21 is the same in the raw frame: Loc 29.1 / 29.8 / 23.4).
# 2. `sym_mf`: the symbolic model in the model frame, the preset's 128 x 2 LLM (probe 20, raw frame: Loc 26.0).
# 3. `r192`: `mf` at 192 px for VMamba and ViT nano, seed 0 (the same encoders, pretrained at 96): 12 x 12 tokens
#    instead of 6 x 6, whether a finer grid makes the boxes more precise (the misses' median coordinate error is
#    0.04-0.07 of the side, probe 21).
source benchmarks/signal_probes/common.sh
probe_setup probe22
DEADLINE=$(( $(date +%s) + LIMIT ))
SUBSET=("seeds=[0,1,2]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]")
study mf "backbones=[vmamba_nano,maxvit_nano,vit_nano]" recipe.overrides.model.box_frame=model \
  execution.workers_per_gpu=8
BENCH=$(benchmark_data mf)
SYM=(--batch 128 --threads 1 --steps 6960 --lr 2.8e-3 --loss-reduction sqrt --image-position after-question)
symbolic sym_mf "$BENCH" "${SYM[@]}" --llm-shape 128,2,4 --init-std 0.088 --box-frame model &
( wait_for_pretraining mf 3
  seed_from mf r192
  LIMIT=$(( DEADLINE - $(date +%s) ))
  study r192 "backbones=[vmamba_nano,vit_nano]" "seeds=[0]" "resolutions=[192]" recipe.overrides.model.box_frame=model \
    execution.workers_per_gpu=2
  wait ) &
wait
echo "sym_mf: $(tail -1 "$W/sym_mf.log")" | tee "$W/probe22_side.txt"
tar czf "$OUT/side.tgz" "$W"/probe22_side.txt "$W"/sym_mf.log \
  $(find "$W"/sym_mf -path '*/tokenizer' -prune -o \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' \) -print)
pack probe22 mf r192
for cell in "$W"/mf/runs/train/*/DONE "$W"/r192/runs/train/*/DONE "$W"/mf/runs/pretrain/*/DONE; do echo "$cell $(cat "$cell")"; done
