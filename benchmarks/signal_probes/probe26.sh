#!/usr/bin/env bash
# Run from the repo root on the GPU machine, with probe 22's tree beside this one as an untracked folder:
#   git archive 805e9e9 src | tar -x -C before_805e9e9     # on the development machine, before the call
#   OUT=DIR LIMIT=540 BEFORE=before_805e9e9/src bash benchmarks/signal_probes/probe26.sh
# A rerun on the same warm machine resumes what a limit stopped. Probe 26 for issue 21:
# 1. `head` and `before`: ViT nano at VLM seeds 0-2, the `paper` preset at the classification init, no ablation,
#    boxes in the model frame, trained by this tree and by probe 22's (`805e9e9`) on the same encoder and the same
#    warmed-up LLM (`before` is seeded with `head`'s dataset, pretraining and warm-up cells). Probe 22 had ViT nano's
#    Loc at 46.7 / 42.7 / 43.7, probe 24 at 32.7 / 36.0 / 37.0 on the same encoder; whether the trees or the runs
#    differ.
# 2. `data12k`: three times the benchmark's scenes (12,000: 9,600 training images) at a third of the epochs (10),
#    the same VLM steps, ViT nano at seeds 0-2: whether the VLM, which sees 3,200 training images 30 times, gains
#    from more of them where its Loc is lowest (probe 24: 32.7-37.0). Its own warm-up, on its training split.
# Then `compile-all`'s step time against `compile` (the preset), six processes and one (probe 24: `compile` 8.2 ms a
# step with one process, 8.9 ms each with six), if the limit leaves time.
source benchmarks/signal_probes/common.sh
probe_setup probe26
DEADLINE=$(( $(date +%s) + LIMIT ))
SUBSET=("seeds=[0,1,2]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]"
        "backbones=[vit_nano]" recipe.overrides.model.box_frame=model)
study head execution.workers_per_gpu=4
( wait_for_pretraining head 1  # the encoder once: data12k's pretraining cells are head's
  seed_from head data12k
  LIMIT=$(( DEADLINE - $(date +%s) ))
  study data12k benchmark.shapes.size=12000 recipe.overrides.optim.epochs=10 execution.workers_per_gpu=3
  wait ) &
( wait_for_pretraining head 1
  for _ in $(seq 1 "$LIMIT"); do ls "$W"/head/runs/warmup/*/DONE >/dev/null 2>&1 && break; sleep 1; done
  seed_with_warmup_from head before
  export PYTHONPATH=$BEFORE:/tmp/site
  LIMIT=$(( DEADLINE - $(date +%s) ))
  study before execution.workers_per_gpu=3
  wait ) &
wait
pack probe26 head before data12k
step_speed "$(benchmark_data head)"
for cell in "$W"/*/runs/train/*/DONE; do echo "$cell $(tr -d '\n ' < "$cell")"; done
