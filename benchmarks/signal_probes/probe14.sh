#!/usr/bin/env bash
# Run from the repo root on the GPU machine after probe13.sh, on the same warm machine (it copies the cells of
# probes 12 and 13: the benchmark, VMamba, ViT and MambaVision nano pretrained):
# OUT=DIR bash benchmarks/signal_probes/probe14.sh. Probe 14 for issue 21: the `paper` preset as set from probes
# 11-13 (2-layer LLM at std 0.088, the `sqrt` loss, 30 epochs) at the VLM seeds 1 and 2 on VMamba nano (`q1`, `q2`),
# and at seed 0 on ViT nano (`qvit`) and MambaVision nano (`qmv`).
source benchmarks/signal_probes/common.sh
LIMIT=300
probe_setup probe14 >/dev/null
SUBSET=(stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]" execution.workers_per_gpu=1)
D=(llm=tiny-llama-2l recipe.overrides.model.llm_init_std=0.088 recipe.overrides.optim.epochs=30
  recipe.overrides.optim.loss_reduction=sqrt)
for arm in q1 q2 qvit qmv; do
  mkdir -p "$W/$arm/runs"
  cp -r --update=none runs/probe13/mv/runs/dataset runs/probe13/mv/runs/pretrain runs/probe12/vit/runs/pretrain \
    "$W/$arm/runs/" 2>/dev/null
done
V="backbones=[vmamba_nano]"
study q1 "$V" "${D[@]}" "seeds=[1]"
study q2 "$V" "${D[@]}" "seeds=[2]"
study qvit "backbones=[vit_nano]" "${D[@]}" "seeds=[0]"
study qmv "backbones=[mambavision_nano]" "${D[@]}" "seeds=[0]"
wait
pack probe14 q1 q2 qvit qmv
