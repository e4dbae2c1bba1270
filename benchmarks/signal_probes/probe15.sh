#!/usr/bin/env bash
# Run from the repo root on the GPU machine, carrying only .whl/ (the study generates its own scenes):
# OUT=DIR LIMIT=540 bash benchmarks/signal_probes/probe15.sh. A rerun on the same warm machine resumes the study.
# Probe 15 for issue 21: the `paper` preset (2-layer LLM at std 0.088, `sqrt`, 30 epochs) with 3x the pretraining
# budget, `pretrain.images_seen=480000`, where ViT nano reached 73.3% held-out top-1 on the CPU (39.9% at the
# preset's 160,000). Three families, classification init, seed 0, no ablation, one study: their held-out top-1 and
# their VLMs against probes 13 and 14 (VMamba nano 69.8 / 77.7 / 35.3, ViT nano 60.8 / 65.7 / 22.3, MambaVision nano
# 68.8 / 74.0 / 41.0 at 160,000 images).
source benchmarks/signal_probes/common.sh
probe_setup probe15
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2 "initializations=[shapes-cls]"
  execution.workers_per_gpu=3)
study p480 "backbones=[vmamba_nano,vit_nano,mambavision_nano]" pretrain.images_seen=480000
wait
pack probe15 p480
