#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe24.sh; a rerun on
# the same warm machine resumes what a limit stopped. Probe 24 for issue 21:
# 1. `all`: the `paper` preset's classification-init slice for all seven families, VLM seeds 0-2, no ablation, boxes
#    in the model frame. ViT nano comes first: probe 23 lost probe 22's boxes (ViT nano seed 0 Loc 46.7 -> 25.7 on
#    the same encoder) while training ran the LLM without its padding mask; training has the mask again, so Loc
#    should be back near 45. Then the separation over seven families (probe 22 had three: 2 of 3 pairs).
# 2. `speed`: once `all` is done, the VLM step's kernels (the cross-entropy now over (token, vocab) rows: probe 23's
#    softmax over a middle dimension took 1.2 of the step's 3.0 ms of card time; the LLM's 4-D mask built without
#    transformers' two device reads) and the step's wall time with one process and with six on the card, with the
#    layers compiled (the preset) and with the whole training forward compiled (`compile-all`).
#    BEFORE=DIR/src (another tree's src, e.g. `ec28750`'s, carried as an untracked folder) measures that tree too, in
#    the same call.
source benchmarks/signal_probes/common.sh
probe_setup probe24
DEADLINE=$(( $(date +%s) + LIMIT ))
SUBSET=("seeds=[0,1,2]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]")
study all "backbones=[vit_nano,vmamba_nano,maxvit_nano,swin_nano,convnext_nano,mambavision_nano,vim_nano]" \
  execution.workers_per_gpu=8
STUDY=$!
wait "$STUDY"
if grep -q "all exit 0" "$W/all.log"; then
  timeout 300 python3 -m pytest -q -p no:randomly -m gpu tests/test_llm_kernels.py 2>&1 | tail -3 \
    | tee "$W/speed.log"  # compile-all's Inductor kernels against eager on the card
  BENCH=$(benchmark_data all)
  LEFT=$(( DEADLINE - $(date +%s) ))
  [ "$LEFT" -gt 60 ] && timeout "$LEFT" python3 benchmarks/vlm_stage_speed.py --out "$W/speed/profile" \
    --data "$BENCH" --steps 100 --profile --set distributed.llm_kernels=compile >> "$W/speed.log" 2>&1
  grep -A20 "kernels a step" "$W/speed.log"
  for arm in src:compile src:compile-all ${BEFORE:+$BEFORE:compile}; do
    tree=${arm%%:*} kernels=${arm##*:}
    name=$( [ "$tree" = src ] && echo head || basename "$(dirname "$tree")" )-$kernels
    for procs in 1 6; do
      LEFT=$(( DEADLINE - $(date +%s) ))
      [ "$LEFT" -gt 60 ] && PYTHONPATH=$tree:/tmp/site timeout "$LEFT" python3 benchmarks/vlm_stage_speed.py \
        --out "$W/speed/${name}_procs$procs" --data "$BENCH" --procs "$procs" --steps 400 \
        --label "$name" --set "distributed.llm_kernels=$kernels" 2>&1 | tail -1 | tee -a "$W/speed.log"
    done
  done
fi
pack probe24 all
tar czf "$OUT/speed.tgz" "$W/speed.log" $(find "$W/speed" -name '*.json' 2>/dev/null) 2>/dev/null
for cell in "$W"/all/runs/*/*/DONE; do echo "$cell $(tr -d '\n ' < "$cell")"; done
