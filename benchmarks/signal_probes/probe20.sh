#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=500 bash benchmarks/signal_probes/probe20.sh (a rerun on
# the same warm machine resumes what a limit stopped). Probe 20 for issue 21:
# 1. `base`: the `paper` preset (the in-study warm-up, 30 VLM epochs) for VMamba, ViT and Swin nano,
#    classification init, seed 0: the encoders the other arms reuse, and the 30-epoch point of the VLM curve.
# 2. `sym_*`: localization's ceiling for the LLM's shape. Probe 16's symbolic model (a perfect image: the scene's
#    ground truth, boxes included) reached Loc 26.0 with the preset's 128-wide 2-layer LLM, and probe 17's VLMs
#    miss mostly on imprecise boxes (VMamba nano, seed 0: 32% right, 7% another object, 55% no object). Each arm
#    is the preset's recipe (sqrt, 6,960 steps at batch 128, lr 2.8e-3, image after the question) with
#    weights drawn at std 1/sqrt(width).
# 3. `swin_w16`: Swin nano with window image/16 instead of image/32, pretrained like the study's (43.9% at 480,000).
# 4. `e10`: VMamba and ViT nano at 10 VLM epochs from `base`'s warmed-up LLM (the VLM curve);
#    `wide10`: the same from `sym_256x2`'s LLM (256 wide; the symbolic run is the warm-up, as in probes 16-17).
source benchmarks/signal_probes/common.sh
probe_setup probe20
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]")
study base "backbones=[vmamba_nano,vit_nano,swin_nano]" execution.workers_per_gpu=6
BENCH=$(benchmark_data base)
SYM=(--batch 128 --threads 1 --steps 6960 --lr 2.8e-3 --loss-reduction sqrt --image-position after-question)
symbolic sym_128x2 "$BENCH" "${SYM[@]}" --llm-shape 128,2,4 --init-std 0.088 &
symbolic sym_256x2 "$BENCH" "${SYM[@]}" --llm-shape 256,2,4 --init-std 0.0625 --save-llm &
symbolic sym_384x2 "$BENCH" "${SYM[@]}" --llm-shape 384,2,6 --init-std 0.051 &
symbolic sym_128x4 "$BENCH" "${SYM[@]}" --llm-shape 128,4,4 --init-std 0.088 &
symbolic sym_256x2_token "$BENCH" "${SYM[@]/sqrt/token}" --llm-shape 256,2,4 --init-std 0.0625 &
( PRETRAIN=$(pretrain_scenes base)
  [ -f "$W/swin_w16.done" ] || { timeout "$LIMIT" python3 benchmarks/signal_probes/swin_window_probe.py \
    --data "$PRETRAIN" --out "$W/swin_w16" >> "$W/swin_w16.log" 2>&1 && touch "$W/swin_w16.done"; } ) &
VLM10=("backbones=[vmamba_nano,vit_nano]" recipe.overrides.optim.epochs=10 execution.workers_per_gpu=2)
( wait_for_pretraining base 3
  for _ in $(seq 1 "$LIMIT"); do ls "$W"/base/runs/warmup/*/DONE >/dev/null 2>&1 && break; sleep 1; done
  seed_with_warmup_from base e10
  study e10 llm_warmup.epochs=30 "${VLM10[@]}"
  for _ in $(seq 1 "$LIMIT"); do [ -d "$W/sym_256x2/llm" ] && break; sleep 1; done
  seed_from base wide10
  study wide10 "llm=$PWD/$W/sym_256x2/llm" recipe.overrides.model.llm_init_std=null llm_warmup.enabled=false \
    "${VLM10[@]}"
  wait ) &
wait
for arm in "$W"/sym_*.log "$W/swin_w16.log"; do echo "$arm: $(tail -1 "$arm")"; done | tee "$W/probe20_side.txt"
tar czf "$OUT/side.tgz" "$W"/probe20_side.txt "$W"/sym_*.log "$W"/swin_w16.log \
  $(find "$W"/sym_* "$W/swin_w16" -path '*/llm' -prune -o -path '*/tokenizer' -prune -o \
    \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' \) -print)
pack probe20 base e10 wide10
for cell in "$W"/*/runs/train/*/DONE "$W"/base/runs/pretrain/*/DONE; do echo "$cell $(cat "$cell")"; done
