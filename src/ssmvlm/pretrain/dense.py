"""Dense adaptation: CenterNet-style detection (box mAP via pycocotools) and semantic segmentation (mIoU).

Detection targets follow CenterNet/TTFNet: an elliptical Gaussian per box on a stride-8 heatmap (penalty-
reduced focal loss), log box size and sub-cell centre offset regressed (L1) at the centre cell. Predicted
boxes are mapped back to original-image pixels through the backbone transform's exact geometry and scored
with COCOeval. Segmentation is per-pixel cross entropy; mIoU is computed in the model frame, ignoring the
letterbox padding (and label 0 where ``reduce_zero_label``), averaged over classes present in prediction
or ground truth.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssmvlm.backbones.base import VisionBackbone
from ssmvlm.data.transforms import ImageTransform
from ssmvlm.pretrain.config import PretrainConfig
from ssmvlm.pretrain.data import IGNORE_LABEL, Record
from ssmvlm.pretrain.heads import CenterNetHead, SegmentationHead

DETECTION_STRIDE = 8
SEGMENTATION_STRIDE = 4
_GAUSSIAN_ALPHA = 0.54  # TTFNet: the Gaussian's sigma is alpha * side / 6
_MAX_DETECTIONS = 100


class DetectionTask:
    primary_metric = "map50"

    def __init__(
        self,
        num_classes: int,
        eval_records: list[Record],
        ground_truth: dict[str, Any],
        category_ids: list[int],
        transform: ImageTransform,
    ) -> None:
        self.num_classes = num_classes
        self.eval_records = eval_records
        self.ground_truth = ground_truth
        self.category_ids = category_ids
        self.transform = transform

    def build_head(self, backbone: VisionBackbone, config: PretrainConfig) -> nn.Module:
        return CenterNetHead(backbone.stage_dims, self.num_classes, dim=config.head_dim, output_stride=DETECTION_STRIDE)

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs["heatmap"].float()
        size, offset = outputs["size"].float(), outputs["offset"].float()
        count, classes, grid_h, grid_w = logits.shape
        valid = batch["box_classes"] >= 0
        image_index, box_index = valid.nonzero(as_tuple=True)
        boxes = batch["boxes"][image_index, box_index].float() / DETECTION_STRIDE
        labels = batch["box_classes"][image_index, box_index]
        centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        cell_x = centre_x.floor().long().clamp(0, grid_w - 1)
        cell_y = centre_y.floor().long().clamp(0, grid_h - 1)

        xs = torch.arange(grid_w, device=logits.device, dtype=torch.float32)
        ys = torch.arange(grid_h, device=logits.device, dtype=torch.float32)
        sigma_x = (_GAUSSIAN_ALPHA * width / 6).clamp(min=1 / 6)[:, None, None]
        sigma_y = (_GAUSSIAN_ALPHA * height / 6).clamp(min=1 / 6)[:, None, None]
        gaussians = torch.exp(
            -((xs[None, None, :] - cell_x[:, None, None]) ** 2) / (2 * sigma_x**2)
            - ((ys[None, :, None] - cell_y[:, None, None]) ** 2) / (2 * sigma_y**2)
        )
        target = torch.zeros(count * classes, grid_h * grid_w, device=logits.device)
        rows = (image_index * classes + labels)[:, None].expand(-1, grid_h * grid_w)
        target.scatter_reduce_(0, rows, gaussians.flatten(1), reduce="amax")
        target = target.view_as(logits)

        positive = target == 1.0
        probability = logits.sigmoid()
        positive_loss = -((1 - probability) ** 2) * F.logsigmoid(logits)
        negative_loss = -((1 - target) ** 4) * probability**2 * F.logsigmoid(-logits)
        heatmap_loss = torch.where(positive, positive_loss, negative_loss).sum() / positive.sum().clamp(min=1)

        if image_index.numel() == 0:
            return heatmap_loss + 0 * (size.sum() + offset.sum())
        predicted_size = size[image_index, :, cell_y, cell_x]
        predicted_offset = offset[image_index, :, cell_y, cell_x]
        size_target = torch.stack([width, height], dim=1).clamp(min=1e-2).log()
        offset_target = torch.stack([centre_x - cell_x, centre_y - cell_y], dim=1)
        return heatmap_loss + F.l1_loss(predicted_size, size_target) + F.l1_loss(predicted_offset, offset_target)

    def decode(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: the top peaks as boxes (x1, y1, x2, y2) in frame pixels, scores and class indices."""
        heat = outputs["heatmap"].float().sigmoid()
        count, classes, grid_h, grid_w = heat.shape
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        scores, flat = peaks.reshape(count, -1).topk(min(_MAX_DETECTIONS, classes * grid_h * grid_w), dim=1)
        labels = flat // (grid_h * grid_w)
        cell = flat % (grid_h * grid_w)
        cell_y, cell_x = cell // grid_w, cell % grid_w
        rows = torch.arange(count, device=heat.device)[:, None]
        offset = outputs["offset"].float()[rows, :, cell_y, cell_x]  # (B, topk, 2)
        size = outputs["size"].float()[rows, :, cell_y, cell_x].clamp(max=10).exp()
        centre_x = (cell_x + offset[..., 0]) * DETECTION_STRIDE
        centre_y = (cell_y + offset[..., 1]) * DETECTION_STRIDE
        half_w, half_h = size[..., 0] * DETECTION_STRIDE / 2, size[..., 1] * DETECTION_STRIDE / 2
        boxes = torch.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], dim=-1)
        return boxes, scores, labels

    def evaluate(self, predictions: Iterable[tuple[Any, dict[str, torch.Tensor]]]) -> dict[str, float]:
        results: list[dict[str, Any]] = []
        evaluated: list[int] = []
        for outputs, batch in predictions:
            boxes, scores, labels = (t.cpu() for t in self.decode(outputs))
            for row, (index, size) in enumerate(zip(batch["index"].tolist(), batch["size"].tolist(), strict=True)):
                image_id = self.eval_records[index].image_id
                evaluated.append(image_id)
                geometry = self.transform.geometry(int(size[0]), int(size[1]))
                for box, score, label in zip(
                    boxes[row].tolist(), scores[row].tolist(), labels[row].tolist(), strict=True
                ):
                    x1, y1, x2, y2 = geometry.box_from_model(tuple(box))
                    x1, x2 = max(0.0, x1), min(float(size[0]), x2)
                    y1, y2 = max(0.0, y1), min(float(size[1]), y2)
                    if x2 > x1 and y2 > y1:
                        results.append(
                            {
                                "image_id": image_id,
                                "category_id": self.category_ids[label],
                                "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "score": score,
                            }
                        )
        map50, map_all = coco_box_map(self.ground_truth, results, evaluated)
        return {"map50": map50, "map": map_all, "eval_images": len(evaluated)}


def coco_box_map(
    ground_truth: dict[str, Any], results: list[dict[str, Any]], image_ids: list[int]
) -> tuple[float, float]:
    """(AP@0.5, AP@[0.5:0.95]) over ``image_ids`` from pycocotools' COCOeval; 0 when nothing was detected."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        coco = COCO()
        # pycocotools 2.0.9-2.0.10 copy 'info' in loadRes; files without it (it is optional) must still work
        coco.dataset = {"info": {}, **ground_truth}
        coco.createIndex()
        detections = coco.loadRes(results)
        evaluator = COCOeval(coco, detections, iouType="bbox")
        evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # stats[0] is AP@[.5:.95], stats[1] AP@.5 (area all, 100 detections); -1 means no ground truth at all
    return max(0.0, float(evaluator.stats[1])), max(0.0, float(evaluator.stats[0]))


class SegmentationTask:
    primary_metric = "miou"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def build_head(self, backbone: VisionBackbone, config: PretrainConfig) -> nn.Module:
        return SegmentationHead(
            backbone.stage_dims, self.num_classes, dim=config.head_dim, output_stride=SEGMENTATION_STRIDE
        )

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), batch["mask"].long(), ignore_index=IGNORE_LABEL)

    def evaluate(self, predictions: Iterable[tuple[Any, dict[str, torch.Tensor]]]) -> dict[str, float]:
        k = self.num_classes
        confusion = torch.zeros(k * k, dtype=torch.long)
        images = 0
        for logits, batch in predictions:
            target = batch["mask"].long()
            valid = target != IGNORE_LABEL
            predicted = logits.argmax(dim=1)
            pairs = target[valid] * k + predicted[valid]
            confusion += torch.bincount(pairs, minlength=k * k).cpu()
            images += target.shape[0]
        return {**segmentation_scores(confusion.view(k, k).numpy()), "eval_images": images}


def segmentation_scores(confusion: np.ndarray) -> dict[str, float]:
    """mIoU over classes present in ground truth or prediction, pixel accuracy, and the mIoU of always
    predicting the most frequent class (the chance level a model must beat)."""
    intersection = np.diag(confusion).astype(np.float64)
    truth, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    union = truth + predicted - intersection
    present = union > 0
    total = max(int(confusion.sum()), 1)
    miou = float((intersection[present] / union[present]).mean()) if present.any() else 0.0
    classes_in_truth = max(int((truth > 0).sum()), 1)
    return {
        "miou": miou,
        "pixel_accuracy": float(intersection.sum() / total),
        "chance_miou": float(truth.max() / total / classes_in_truth),
    }
