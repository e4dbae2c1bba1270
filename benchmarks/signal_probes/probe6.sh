#!/usr/bin/env bash
# Run from the repo root on the GPU machine: OUT=DIR LIMIT=560 bash benchmarks/signal_probes/probe6.sh (set-up and
# helpers: common.sh). Rerunning it on the same warm machine resumes every study.
# Probe 6 for issue 21, the `paper` preset on VMamba, MambaVision and ViT nano, seed 0, no ablation:
# - `plain`: the classification-initialized cells as the preset has them (the baseline of this call's card);
# - `seg160k`: VMamba and ViT nano's segmentation-adapted encoders at 4x the preset's dense budget (probe 5's
#   40,000 images at 192² left mIoU at 27% / 16% against 11.5% for background only, too weak to tell whether
#   per-location features help the VLM bind a question to one of three objects). The dense pretrainings may not
#   finish inside one call's limit; rerun the script on the same warm machine to resume them.
# Not here: the tied LM head. It took ShapeScenes-POPE from chance to 82 on one-object scenes, but on the
# preset's three-object scenes it moved nothing in two CPU A/Bs (RESULTS, "Yes/no questions").
# The variant starts from copies of `plain`'s dataset and classification pretraining cells (content-addressed).
source benchmarks/signal_probes/common.sh
probe_setup probe6
SUBSET=("seeds=[0]" stabilization.enabled=false execution.threads=2)
study plain "backbones=[vmamba_nano,mambavision_nano,vit_nano]" "initializations=[shapes-cls]" execution.workers_per_gpu=3
( wait_for_pretraining plain 3
  seed_from plain seg160k
  study seg160k "backbones=[vmamba_nano,vit_nano]" "initializations=[shapes-seg]" pretrain.dense_images_seen=160000 \
    execution.workers_per_gpu=2
  wait ) &
wait
pack probe6 plain seg160k
