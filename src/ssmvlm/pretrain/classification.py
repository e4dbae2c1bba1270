"""Classification pretraining: linear head on pooled last-stage features, label-smoothed cross entropy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmvlm.backbones.base import VisionBackbone
from ssmvlm.pretrain.config import PretrainConfig
from ssmvlm.pretrain.heads import LinearClassifier


class ClassificationTask:
    primary_metric = "top1"

    def __init__(self, num_classes: int, label_smoothing: float) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def build_head(self, backbone: VisionBackbone, config: PretrainConfig) -> nn.Module:
        return LinearClassifier(backbone.stage_dims[-1], self.num_classes)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), batch["label"], label_smoothing=self.label_smoothing)

    def evaluate(self, predictions: Iterable[tuple[Any, dict[str, torch.Tensor]]]) -> dict[str, float]:
        """Top-1, top-5 (top-k with k = the class count when there are fewer) and loss, without smoothing."""
        k = min(5, self.num_classes)
        hits1 = hitsk = count = 0
        loss_sum = 0.0
        for logits, batch in predictions:
            labels = batch["label"]
            top = logits.float().topk(k, dim=1).indices
            hits1 += int((top[:, 0] == labels).sum())
            hitsk += int((top == labels[:, None]).any(dim=1).sum())
            loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
            count += labels.numel()
        denominator = max(count, 1)
        return {
            "top1": hits1 / denominator,
            "top5": hitsk / denominator,
            "loss": loss_sum / denominator,
            "chance_top1": 1 / self.num_classes,
            "eval_images": count,
        }
