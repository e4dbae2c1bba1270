#!/usr/bin/env bash
# Run from the repo root on the GPU machine, with the `paper` preset's benchmark cell e3a7f876bf81 carried in
# runs/bench (train/ with llava.json, scenes.json and the evaluation files the prior is fitted on; test/; images/):
# OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe10.sh. A rerun on the same warm machine skips finished arms.
# Probe 10 for issue 21: which change to the VLM stage lets the LLM learn the yes/no and colour families at all,
# given a perfect image? Eight symbolic_probe.py arms at once, the one-hot scene grid through a fresh connector
# unless named, 5,000 steps at the preset's batch 128 and lr 2.8e-3:
# - `base`: the preset's VLM stage; `tie`: the LM head tied to the input embedding; `bos`: the image after BOS
#   instead of after the question; `sample`: every answer weighs the same in the loss;
# - `deep2`: a 2-layer LLM (128 wide); `wide4`: a 4-layer LLM 256 wide;
# - `exist`, `exist2`: the existence questions alone ("Is there a ..."), words cells (each cell the LLM's own
#   embeddings of its words), the preset's LLM and a 2-layer one: can the LLM learn them in isolation?
source benchmarks/signal_probes/common.sh
probe_setup probe10
COMMON=(--batch 128 --steps 5000 --lr 2.8e-3 --threads 2)
symbolic base runs/bench "${COMMON[@]}" &
symbolic tie runs/bench "${COMMON[@]}" --tie &
symbolic bos runs/bench "${COMMON[@]}" --image-position after-bos &
symbolic sample runs/bench "${COMMON[@]}" --loss-reduction sample &
symbolic deep2 runs/bench "${COMMON[@]}" --llm-shape 128,2,4 &
symbolic wide4 runs/bench "${COMMON[@]}" --llm-shape 256,4,8 &
symbolic exist runs/bench "${COMMON[@]}" --cells words --questions '^Is there' &
symbolic exist2 runs/bench "${COMMON[@]}" --cells words --questions '^Is there' --llm-shape 128,2,4 &
wait
ARMS=(base tie bos sample deep2 wide4 exist exist2)
for arm in "${ARMS[@]}"; do echo "== $arm"; tail -1 "$W/$arm.log"; done | tee "$W/summary.txt"
tar czf "$OUT/probe10.tgz" "$W/summary.txt" "$W/gpu.txt" $(for arm in "${ARMS[@]}"; do echo "$W/$arm.log"
  find "$W/$arm" -path "$W/$arm/tokenizer" -prune -o -name predictions.jsonl -prune -o -type f -print; done)
