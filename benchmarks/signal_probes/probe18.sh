#!/usr/bin/env bash
# Run from the repo root on the GPU machine after probe16.sh, on the same warm machine (it copies probe 16's
# benchmark and pretraining scenes and its LLM trained on symbolic scenes): OUT=DIR LIMIT=520 bash
# benchmarks/signal_probes/probe18.sh. Probe 18 for issue 21: the preset's other four families (Vim, MaxViT, Swin,
# ConvNeXt nano) pretrained on 480,000 images, their held-out top-1, and their VLMs with probe 17's stage (the
# warm-started LLM, compiled layers), classification init, seed 0.
source benchmarks/signal_probes/common.sh
probe_setup probe18 >/dev/null
SUBSET=(stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]" pretrain.images_seen=480000
  "llm=$PWD/runs/probe16/sym/llm" recipe.overrides.model.llm_init_std=null
  recipe.overrides.distributed.llm_kernels=compile)
mkdir -p "$W/f4/runs"; cp -r --update=none runs/probe16/p480/runs/dataset "$W/f4/runs/"
study f4 "backbones=[vim_nano,maxvit_nano,swin_nano,convnext_nano]" "seeds=[0]" execution.workers_per_gpu=4
wait
pack probe18 f4
for cell in "$W"/f4/runs/*/*/DONE; do echo "$cell $(cat "$cell")"; done
