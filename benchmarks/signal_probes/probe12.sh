#!/usr/bin/env bash
# Run from the repo root on the GPU machine right after probe11.sh, on the same warm machine (it copies probe 11's
# dataset and VMamba nano pretraining cells; without them each study pretrains its own):
# OUT=DIR bash benchmarks/signal_probes/probe12.sh. Probe 12 for issue 21: probe 11's `d2i_sample` arm (2-layer LLM
# at std 0.088, the loss per answer) at the VLM seeds 1 and 2, at 30 epochs (6,960 steps) instead of 20, and on
# ViT nano (which pretrains here).
source benchmarks/signal_probes/common.sh
LIMIT=500
probe_setup probe12 >/dev/null
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]"
  execution.workers_per_gpu=1)
D=(llm=tiny-llama-2l recipe.overrides.model.llm_init_std=0.088 recipe.overrides.optim.loss_reduction=sample)
for arm in s1 s2 e30 vit; do
  mkdir -p "$W/$arm/runs"; cp -rn runs/probe11/plain/runs/dataset runs/probe11/plain/runs/pretrain "$W/$arm/runs/"
done
study s1 "backbones=[vmamba_nano]" "${D[@]}" "seeds=[1]"
study s2 "backbones=[vmamba_nano]" "${D[@]}" "seeds=[2]"
study e30 "backbones=[vmamba_nano]" "${D[@]}" recipe.overrides.optim.epochs=30
study vit "backbones=[vit_nano]" "${D[@]}"
wait
pack probe12 s1 s2 e30 vit
