#!/usr/bin/env bash
# Run from the repo root on the GPU machine after probe16.sh, on the same warm machine (it copies probe 16's cells:
# the benchmark, the three encoders pretrained on 480,000 images, the LLM trained on symbolic scenes):
# OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe17.sh. Probe 17 for issue 21, with the LLM layers compiled
# (`distributed.llm_kernels=compile`, probe 16: 1.35x the eager steps/s):
# - `w3`: the warm-started LLM for VMamba, ViT and MambaVision nano at the VLM seeds 0, 1 and 2 (separation);
# - `wtok`: the same for VMamba nano at seed 0 under the token mean instead of `sqrt` (localization).
source benchmarks/signal_probes/common.sh
probe_setup probe17 >/dev/null
SUBSET=(stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]" pretrain.images_seen=480000
  "llm=$PWD/runs/probe16/sym/llm" recipe.overrides.model.llm_init_std=null
  recipe.overrides.distributed.llm_kernels=compile)
for arm in w3 wtok; do
  mkdir -p "$W/$arm/runs"; cp -r --update=none runs/probe16/p480/runs/dataset runs/probe16/p480/runs/pretrain "$W/$arm/runs/"
done
study w3 "backbones=[vmamba_nano,vit_nano,mambavision_nano]" "seeds=[0,1,2]" execution.workers_per_gpu=5
study wtok "backbones=[vmamba_nano]" "seeds=[0]" recipe.overrides.optim.loss_reduction=token execution.workers_per_gpu=1
wait
pack probe17 w3 wtok
for cell in "$W"/*/runs/train/*/DONE; do echo "$cell $(cat "$cell")"; done
