#!/usr/bin/env bash
# Probe 7b, on the machine probe7.sh just ran on (its runs/probe7 folder): the preset's VLM stage and the
# 2,000-scene one-object mix at 1.5x the steps (6,960), VMamba and ViT nano, from copies of probe 7's dataset and
# pretraining cells. OUT=DIR LIMIT=500 bash benchmarks/signal_probes/probe7b.sh
source benchmarks/signal_probes/common.sh
probe_setup probe7
[ -d $W/mix2k/runs/pretrain ] || { echo "no probe 7 folder: run probe7.sh first"; exit 1; }
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "backbones=[vmamba_nano,vit_nano]"
  "initializations=[shapes-cls]" execution.workers_per_gpu=2 recipe.overrides.optim.max_steps=6960)
ONE="{difficulty: easy, min_objects: 1, max_objects: 1, clutter: none, non_square_share: 0.0, vqa_per_image: 6,
  refs_per_image: 3, existence_turns: true}"
seed_from mix2k plain7k mix2k7k
study plain7k
study mix2k7k benchmark.train_mix.size=2000 "benchmark.train_mix.scene=$ONE"
wait
pack probe7b plain7k mix2k7k
