#!/usr/bin/env bash
# Run from the repo root on the GPU machine after probe12.sh, on the same warm machine (it copies probe 12's cells:
# the benchmark, VMamba and ViT nano pretrained): OUT=DIR bash benchmarks/signal_probes/probe13.sh. Probe 13 for
# issue 21, at 30 epochs with the 2-layer LLM at std 0.088: the loss per answer at the VLM seeds 1 and 2 (`s1_e30`,
# `s2_e30`) and on ViT nano (`vit_e30`), `sqrt` at seed 0 (`sqrt_e30`); and MambaVision nano (pretrained here) with
# the loss per answer at 20 epochs (`mv`).
source benchmarks/signal_probes/common.sh
LIMIT=430
probe_setup probe13 >/dev/null
SUBSET=(stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]" execution.workers_per_gpu=1)
D=(llm=tiny-llama-2l recipe.overrides.model.llm_init_std=0.088 recipe.overrides.optim.epochs=30)
for arm in s1_e30 s2_e30 sqrt_e30 vit_e30 mv; do
  mkdir -p "$W/$arm/runs"
  cp -r --update=none runs/probe12/vit/runs/dataset runs/probe12/vit/runs/pretrain "$W/$arm/runs/"
done
V="backbones=[vmamba_nano]"
S=recipe.overrides.optim.loss_reduction=sample
study s1_e30 "$V" "${D[@]}" "$S" "seeds=[1]"
study s2_e30 "$V" "${D[@]}" "$S" "seeds=[2]"
study sqrt_e30 "$V" "${D[@]}" recipe.overrides.optim.loss_reduction=sqrt "seeds=[0]"
study vit_e30 "backbones=[vit_nano]" "${D[@]}" "$S" "seeds=[0]"
study mv "backbones=[mambavision_nano]" llm=tiny-llama-2l recipe.overrides.model.llm_init_std=0.088 "$S" "seeds=[0]"
wait
pack probe13 s1_e30 s2_e30 sqrt_e30 vit_e30 mv
