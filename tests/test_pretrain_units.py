"""Pretraining pieces: augmentation moves targets with the pixels, the schedule, box decoding, mIoU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssmvlm.data.transforms import build_image_transform
from ssmvlm.pretrain.augment import augment_batch
from ssmvlm.pretrain.config import AugmentConfig, DataConfig, PretrainConfig
from ssmvlm.pretrain.data import FrameDataset, load_task_data
from ssmvlm.pretrain.dense import DETECTION_STRIDE, DetectionTask, coco_box_map, segmentation_scores
from ssmvlm.pretrain.loop import lr_at, peak_lr
from ssmvlm.utils.errors import DataError


def _one_box_batch(count: int = 8, size: int = 64) -> dict[str, torch.Tensor]:
    images = torch.zeros(count, 3, size, size, dtype=torch.uint8)
    masks = torch.zeros(count, size, size, dtype=torch.uint8)
    boxes = torch.zeros(count, 2, 4)
    for i in range(count):
        x1, y1 = 4 + 3 * i, 10 + 2 * i
        x2, y2 = x1 + 24, y1 + 16
        images[i, 0, y1:y2, x1:x2] = 255
        masks[i, y1:y2, x1:x2] = 1
        boxes[i, 0] = torch.tensor([x1, y1, x2, y2], dtype=torch.float32)
    classes = torch.tensor([[0, -1]] * count)
    return {"image": images, "mask": masks, "boxes": boxes, "box_classes": classes}


def test_boxes_and_masks_follow_the_pixels_under_crop_and_flip() -> None:
    batch = _one_box_batch()
    config = AugmentConfig(hflip=True, crop_scale_min=0.5)
    for seed in range(4):
        out = augment_batch(batch, config, torch.Generator().manual_seed(seed))
        for i in range(out["image"].shape[0]):
            if out["box_classes"][i, 0] < 0:
                continue  # cropped away
            red = out["image"][i, 0] > 127
            ys, xs = red.nonzero(as_tuple=True)
            pixel_box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            assert torch.allclose(out["boxes"][i, 0], pixel_box, atol=2.0)
            assert ((out["mask"][i] == 1) == red).float().mean() > 0.97
        assert (out["box_classes"][:, 1] == -1).all()  # padding slots stay padding


def test_flip_without_crop_mirrors_boxes_and_keeps_the_rest() -> None:
    batch = _one_box_batch()
    out = augment_batch(batch, AugmentConfig(hflip=True, crop_scale_min=1.0), torch.Generator().manual_seed(0))
    original, moved = batch["boxes"][:, 0], out["boxes"][:, 0]
    mirrored = torch.stack([64 - original[:, 2], original[:, 1], 64 - original[:, 0], original[:, 3]], dim=1)
    kept = torch.isclose(moved, original, atol=1e-4).all(dim=1)
    flipped = torch.isclose(moved, mirrored, atol=1e-4).all(dim=1)
    assert (kept | flipped).all() and kept.any() and flipped.any()
    assert torch.equal(out["image"][kept], batch["image"][kept])
    assert torch.equal(out["image"][flipped], batch["image"][flipped].flip(-1))
    assert torch.equal(out["mask"][flipped], batch["mask"][flipped].flip(-1))


def test_same_generator_seed_draws_the_same_augmentation() -> None:
    batch = _one_box_batch()
    first = augment_batch(batch, AugmentConfig(), torch.Generator().manual_seed(5))
    second = augment_batch(batch, AugmentConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["boxes"], second["boxes"])


def test_schedule_warms_up_decays_and_scales_with_batch() -> None:
    config = PretrainConfig(images_seen=1000, batch_size=64)
    config.optim.lr, config.optim.lr_reference_batch, config.optim.warmup_fraction = 1e-3, 256, 0.1
    assert peak_lr(config) == 2.5e-4
    assert lr_at(50, config) == 0.5 * peak_lr(config)
    assert abs(lr_at(100, config) - peak_lr(config)) < 1e-12
    assert lr_at(550, config) < lr_at(300, config) < peak_lr(config)
    assert abs(lr_at(1000, config) - config.optim.min_lr_ratio * peak_lr(config)) < 1e-12


def test_decode_places_the_peak_box_even_on_channels_last_outputs() -> None:
    heatmap = torch.full((1, 3, 6, 8), -9.0)
    heatmap[0, 1, 2, 3] = 4.0  # class 1, cell row 2, column 3
    size = torch.zeros(1, 2, 6, 8)
    size[0, :, 2, 3] = math.log(2.0)  # two cells wide and high
    offset = torch.full((1, 2, 6, 8), 0.5)
    outputs = {
        k: v.contiguous(memory_format=torch.channels_last)
        for k, v in {"heatmap": heatmap, "size": size, "offset": offset}.items()
    }
    task = DetectionTask(3, [], {}, [1, 2, 3], transform=None)  # type: ignore[arg-type]
    boxes, scores, labels = task.decode(outputs)
    centre_x, centre_y = 3.5 * DETECTION_STRIDE, 2.5 * DETECTION_STRIDE
    half = DETECTION_STRIDE
    expected = torch.tensor([centre_x - half, centre_y - half, centre_x + half, centre_y + half])
    assert torch.allclose(boxes[0, 0], expected) and labels[0, 0] == 1 and scores[0, 0] > 0.98
    assert scores[0, 1] < 0.01  # everything else stays near the prior


def test_miou_counts_classes_present_and_reports_the_majority_baseline() -> None:
    confusion = np.array([[80, 10, 0], [5, 5, 0], [0, 0, 0]])  # rows: truth, columns: prediction
    scores = segmentation_scores(confusion)
    assert math.isclose(scores["miou"], (80 / 95 + 5 / 20) / 2)  # class 2 absent everywhere: left out
    assert math.isclose(scores["pixel_accuracy"], 85 / 100)
    assert math.isclose(scores["chance_miou"], (90 / 100) / 2)


def _write_image(path: Path, size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (90, 20, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_with_train_and_val_folders(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 1)):
        for name in ("ant", "bee"):
            for i in range(count):
                _write_image(tmp_path / split / name / f"{i}.jpg")
    config = PretrainConfig(data=DataConfig(source="imagefolder", root=tmp_path))
    data = load_task_data(config)
    assert data.class_names == ["ant", "bee"] and len(data.train) == 6 and len(data.eval) == 2
    assert sorted(r.label for r in data.eval) == [0, 1]


def test_coco_without_a_val_file_holds_images_out_with_their_ground_truth(tmp_path: Path) -> None:
    images = [{"id": 10 + i, "file_name": f"{i}.png", "width": 40, "height": 30} for i in range(10)]
    annotations = [
        {"id": 100 + i, "image_id": 10 + i, "category_id": 7, "bbox": [2, 3, 10, 8], "iscrowd": 0} for i in range(10)
    ]
    for image in images:
        _write_image(tmp_path / image["file_name"])
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "seven"}]})
    )
    config = PretrainConfig(objective="detection", data=DataConfig(source="coco", annotations=ann_file))
    data = load_task_data(config)
    held = {r.image_id for r in data.eval}
    assert len(held) == 1 and len(data.train) == 9 and data.category_ids == [7]
    assert {a["image_id"] for a in data.coco_ground_truth["annotations"]} == held
    assert data.train[0].boxes == [(2.0, 3.0, 12.0, 11.0)] and data.train[0].box_classes == [0]


def test_ade20k_layout_and_reduce_zero_label(tmp_path: Path) -> None:
    for folder in ("training", "validation"):
        _write_image(tmp_path / "images" / folder / "a.jpg", size=(32, 32))
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[:, 16:] = 3
        (tmp_path / "annotations" / folder).mkdir(parents=True)
        Image.fromarray(mask).save(tmp_path / "annotations" / folder / "a.png")
    config = PretrainConfig(objective="segmentation", data=DataConfig(source="ade20k", root=tmp_path))
    data = load_task_data(config)
    assert data.num_classes == 150 and len(data.train) == len(data.eval) == 1
    transform = build_image_transform("letterbox", 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    sample = FrameDataset(data.train, transform, "segmentation", num_classes=150, reduce_zero_label=True)[0]
    assert set(sample["mask"][:, :16].unique().tolist()) == {255}  # "other" is ignored
    assert set(sample["mask"][:, 16:].unique().tolist()) == {2}  # label 3 is class index 2
    (tmp_path / "annotations" / "training" / "a.png").unlink()
    with pytest.raises(DataError, match=r"a\.png: annotation for image a\.jpg not found"):
        load_task_data(config)


def test_coco_box_map_on_ground_truth_without_info() -> None:
    # 'info' is optional in COCO files, but pycocotools 2.0.9-2.0.10 read it in loadRes.
    ground_truth = {
        "images": [{"id": 1, "width": 20, "height": 20}, {"id": 2, "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "area": 36, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 10, 8, 8], "area": 64, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "square"}],
    }
    hit = {"image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "score": 0.9}
    miss = {"image_id": 2, "category_id": 1, "bbox": [0, 0, 3, 3], "score": 0.8}
    assert coco_box_map(ground_truth, [hit], [1]) == pytest.approx((1.0, 1.0))
    map50, _ = coco_box_map(ground_truth, [hit, miss], [1, 2])
    assert map50 == pytest.approx(0.5, abs=0.02)
    assert "info" not in ground_truth  # the caller's dict is left as it was
