#!/usr/bin/env bash
# Run from the repo root on the GPU machine, carrying .whl/ and .devcarry/ (old_src.tgz: `git archive BASE src`, the
# tree before the VLM stage's host-side changes): OUT=DIR LIMIT=380 bash benchmarks/signal_probes/probe16.sh. A
# rerun on the same warm machine skips the timing and resumes the rest. Probe 16 for issue 21:
# 1. the VLM stage's step time (benchmarks/vlm_stage_speed.py: the `paper` preset's stage, four processes on the
#    card as a study's workers, 400 steps each): BASE's tree, this one, and this one with compiled LLM layers;
# 2. probe 15 (`p480`): `pretrain.images_seen=480000` for VMamba, ViT and MambaVision nano, classification init,
#    seed 0, with the preset's VLM stage;
# 3. `warm`: VMamba nano's VLM stage (p480's encoder) from an LLM first trained on symbolic scenes
#    (symbolic_probe.py with the preset's LLM, init, loss and steps): the lever that took Loc from 40.3 to 59.7 with
#    the old 8-layer LLM (probe 9).
source benchmarks/signal_probes/common.sh
probe_setup probe16
if [ ! -f "$W/speed.md" ]; then
  mkdir -p /tmp/base && tar xzf .devcarry/old_src.tgz -C /tmp/base
  SPEED=(benchmarks/vlm_stage_speed.py --procs 4 --steps 400 --skip 100)
  { echo "| tree | processes | ms/step per process | steps/s, all | wall s |"; echo "|---|---|---|---|---|"
    PYTHONPATH=/tmp/base/src:/tmp/site timeout 150 python3 "${SPEED[@]}" --out "$W/speed_base" --label base \
      --data "$W/speed_data" 2>"$W/speed_base.log" | tail -1
    timeout 100 python3 "${SPEED[@]}" --out "$W/speed_new" --label new --data "$W/speed_data" \
      2>"$W/speed_new.log" | tail -1
    timeout 150 python3 "${SPEED[@]}" --out "$W/speed_compile" --label "new, compiled layers" \
      --data "$W/speed_data" --set distributed.llm_kernels=compile 2>"$W/speed_compile.log" | tail -1
  } | tee "$W/speed.md"
fi
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]"
  pretrain.images_seen=480000)
study p480 "backbones=[vmamba_nano,vit_nano,mambavision_nano]" execution.workers_per_gpu=3
BENCH=$(benchmark_data p480)
( [ -d "$W/sym/llm" ] || symbolic sym "$BENCH" --batch 128 --threads 2 --steps 6960 --lr 2.8e-3 --llm tiny-llama-2l \
    --init-std 0.088 --loss-reduction sqrt --image-position after-question --save-llm
  wait_for_pretraining p480 3
  seed_from p480 warm
  [ -d "$W/sym/llm" ] && study warm "backbones=[vmamba_nano]" "llm=$PWD/$W/sym/llm" \
    recipe.overrides.model.llm_init_std=null execution.workers_per_gpu=1
  wait ) &
wait
tail -1 "$W/sym.log" > "$W/symbolic_summary.txt"
tar czf "$OUT/symbolic.tgz" "$W/symbolic_summary.txt" "$W/sym.log" "$W"/speed*.md "$W"/speed_*/speed.json \
  "$W"/speed_*.log $(find "$W/sym" -path "$W/sym/llm" -prune -o -path "$W/sym/tokenizer" -prune -o -type f -print)
pack probe16 p480 warm
for cell in "$W"/p480/runs/*/*/DONE "$W"/warm/runs/train/*/DONE; do echo "$cell $(cat "$cell")"; done
