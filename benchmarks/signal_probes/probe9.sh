#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe9.sh (set-up and
# helpers: common.sh). Rerunning it on the same warm machine resumes the studies and skips finished symbolic arms.
# Probe 9 for issue 21: is the from-scratch LLM or the encoder what holds the `paper` preset's VLMs near the
# controls? symbolic_probe.py trains the preset's VLM stage with the scene's ground truth on the encoders' 6x6
# grid in place of the encoder (a perfect image), on the benchmark's own training split:
# - `sym`: the preset's LLM, steps, batch and learning rate; its LLM is kept for `symllm`;
# - `symtie`: the LM head tied to the input embedding; `sym10m`: tiny-llama-10m at half the learning rate;
# and, on VMamba nano (classification init, seed 0, no ablation):
# - `plain`: the preset's VLM stage (4,640 steps), the baseline of this call's card;
# - `symllm`: the same stage starting from `sym`'s trained LLM (`llm=DIR`) instead of a random one.
source benchmarks/signal_probes/common.sh
probe_setup probe9
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=2)
study plain
BENCH=$(benchmark_data plain)
( symbolic sym "$BENCH" --batch 128 --threads 1 --steps 4640 --lr 2.8e-3 --save-llm
  wait_for_pretraining plain 1
  seed_from plain symllm
  [ -d "$W/sym/llm" ] && study symllm "llm=$PWD/$W/sym/llm"
  wait ) &
symbolic symtie "$BENCH" --batch 128 --threads 1 --steps 4640 --lr 2.8e-3 --tie &
symbolic sym10m "$BENCH" --batch 128 --threads 1 --steps 4640 --lr 1.4e-3 --llm tiny-llama-10m &
wait
ARMS=(sym symtie sym10m)
for arm in "${ARMS[@]}"; do echo "== $arm"; tail -1 "$W/$arm.log"; done | tee "$W/symbolic_summary.txt"
tar czf "$OUT/symbolic.tgz" "$W/symbolic_summary.txt" $(for arm in "${ARMS[@]}"; do echo "$W/$arm.log"
  find "$W/$arm" -path "$W/$arm/llm" -prune -o -path "$W/$arm/tokenizer" -prune -o -type f -print; done)
pack probe9 plain symllm
