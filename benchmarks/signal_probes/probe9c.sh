#!/usr/bin/env bash
# Run from the repo root on the GPU machine, with the benchmark's data carried in runs/bench (train/llava.json,
# train/scenes.json, test/, images/train, images/test of the `paper` preset's benchmark cell e3a7f876bf81):
# OUT=DIR LIMIT=250 bash benchmarks/signal_probes/probe9c.sh.
# Probe 9's symbolic arm with an ideal connector (`--cells words`: each grid cell is the sum of the LLM's own
# embeddings of its size, colour and shape words), untied and tied, at the preset's steps: with the perfect image
# already in the LLM's vocabulary, does the LLM learn the question families?
source benchmarks/signal_probes/common.sh
probe_setup probe9c
for arm in words wordstie; do
  symbolic "$arm" runs/bench --cells words --batch 128 --steps 4640 --lr 2.8e-3 --threads 2 \
    $([ $arm = wordstie ] && echo --tie) &
done
wait
for arm in words wordstie; do echo "== $arm"; tail -1 "$W/$arm.log"; done
tar czf "$OUT/probe9c.tgz" "$W"/*.log "$W/gpu.txt" $(find "$W" -path '*/tokenizer' -prune -o -name '*.json' -print \
  -o -name '*.md' -print -o -name '*.jsonl' -print)
