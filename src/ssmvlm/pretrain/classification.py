"""Classification pretraining: linear head on pooled last-stage features, label-smoothed cross entropy.

Where the data offers them (ShapeScenes), auxiliary targets train beside the class label from the same pooled
features: one cross entropy per attribute of the labelled object (its colour, its shape) and a multi-label
binary cross entropy over every class present in the image. The reported top-1 is always the class label's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmvlm.backbones.base import VisionBackbone
from ssmvlm.pretrain.config import PretrainConfig
from ssmvlm.pretrain.heads import LinearClassifier

PRESENCE = "present"


class ClassificationTask:
    primary_metric = "top1"

    def __init__(
        self,
        num_classes: int,
        label_smoothing: float,
        attributes: dict[str, int] | None = None,
        presence: bool = False,
    ) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.attributes = dict(attributes or {})
        self.presence = presence

    @property
    def auxiliary_outputs(self) -> dict[str, int]:
        return {**self.attributes, **({PRESENCE: self.num_classes} if self.presence else {})}

    def build_head(self, backbone: VisionBackbone, config: PretrainConfig) -> nn.Module:
        head = LinearClassifier(backbone.stage_dims[-1], self.num_classes, self.auxiliary_outputs)
        if self.presence:
            # Start at the prior of a class being present (about one in num_classes), not at 1/2: otherwise the
            # summed presence loss starts near num_classes × ln 2 and swamps the class label's for many steps.
            nn.init.constant_(head.auxiliary[PRESENCE].bias, -math.log(self.num_classes - 1))
        return head

    def loss(self, outputs: torch.Tensor | dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        loss = F.cross_entropy(logits.float(), batch["label"], label_smoothing=self.label_smoothing)
        for name in self.attributes:
            target = batch[f"attribute_{name}"]
            loss = loss + F.cross_entropy(outputs[name].float(), target, label_smoothing=self.label_smoothing)
        if self.presence:
            # Summed over classes (a mean over 56 mostly-absent classes would weigh the objects next to nothing).
            presence = F.binary_cross_entropy_with_logits(
                outputs[PRESENCE].float(), batch[PRESENCE].float(), reduction="sum"
            )
            loss = loss + presence / logits.shape[0]
        return loss

    def evaluate(self, predictions: Iterable[tuple[Any, dict[str, torch.Tensor]]]) -> dict[str, float]:
        """Top-1, top-5 (top-k with k = the class count when there are fewer) and loss, without smoothing; per
        auxiliary attribute its top-1, and for presence the F1 of the classes predicted present."""
        k = min(5, self.num_classes)
        hits1 = hitsk = count = 0
        loss_sum = 0.0
        attribute_hits = dict.fromkeys(self.attributes, 0)
        true_positive = predicted = actual = 0
        for outputs, batch in predictions:
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs
            labels = batch["label"]
            top = logits.float().topk(k, dim=1).indices
            hits1 += int((top[:, 0] == labels).sum())
            hitsk += int((top == labels[:, None]).any(dim=1).sum())
            loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
            count += labels.numel()
            for name in self.attributes:
                attribute_hits[name] += int((outputs[name].argmax(dim=1) == batch[f"attribute_{name}"]).sum())
            if self.presence:
                guess, truth = outputs[PRESENCE] > 0, batch[PRESENCE].bool()
                true_positive += int((guess & truth).sum())
                predicted += int(guess.sum())
                actual += int(truth.sum())
        denominator = max(count, 1)
        metrics = {
            "top1": hits1 / denominator,
            "top5": hitsk / denominator,
            "loss": loss_sum / denominator,
            "chance_top1": 1 / self.num_classes,
            "eval_images": count,
        }
        metrics.update({f"{name}_top1": hits / denominator for name, hits in attribute_hits.items()})
        if self.presence:
            metrics["presence_f1"] = 2 * true_positive / max(predicted + actual, 1)
        return metrics
