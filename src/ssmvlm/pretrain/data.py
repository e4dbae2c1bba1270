"""Pretraining data: records from ShapeScenes, ImageFolder, COCO and ADE20K; frames in the model's geometry.

Every source becomes a :class:`TaskData`: train and held-out :class:`Record` lists plus what the task needs
(class names; for detection the held-out COCO ground truth). A :class:`FrameDataset` turns a record into
fixed-size uint8 tensors in the backbone's frame (its resize strategy), with boxes and masks moved exactly
as the pixels; batches of them are either cached on the device (small sets such as ShapeScenes) or streamed
through a ``DataLoader``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ssmvlm.data.images import check_inside_root, open_image
from ssmvlm.data.transforms import ImageTransform
from ssmvlm.pretrain.config import PretrainConfig
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json
from ssmvlm.utils.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IGNORE_LABEL = 255
ADE20K_NUM_CLASSES = 150
_ADE20K_SPLITS = {"train": "training", "val": "validation"}
_CACHE_LIMIT_BYTES = 4 * 2**30


@dataclass
class Record:
    """One image and its labels; boxes are (x1, y1, x2, y2) pixels of the original image."""

    image: str
    root: Path | None = None  # ``image`` is relative to it (and may not leave it) when set
    label: int = -1
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    box_classes: list[int] = field(default_factory=list)
    mask: Path | None = None
    image_id: int = -1
    attributes: dict[str, int] = field(default_factory=dict)  # classification: auxiliary single-label targets
    present: list[int] | None = None  # classification: every class in the image (multi-label target)


@dataclass
class TaskData:
    train: list[Record]
    eval: list[Record]
    class_names: list[str]
    coco_ground_truth: dict[str, Any] | None = None  # held-out COCO dataset (detection)
    category_ids: list[int] = field(default_factory=list)  # contiguous class index → COCO category id
    description: str = ""
    attributes: dict[str, list[str]] = field(default_factory=dict)  # auxiliary targets' names → their classes
    has_presence: bool = False  # every record carries ``present`` (multi-label targets over class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_task_data(config: PretrainConfig) -> TaskData:
    """The train and held-out records for ``config.objective`` from ``config.data``."""
    return _LOADERS[(config.objective, config.data.source)](config)


# -- ShapeScenes -----------------------------------------------------------------------------------------


def _shapes_root(config: PretrainConfig) -> Path:
    root = Path(config.data.root)  # type: ignore[arg-type]
    if not root.is_dir():
        raise DataError(root, "ShapeScenes directory not found (make one with: ssmvlm data make-shapes --out DIR)")
    return root


def _shapes_classification(config: PretrainConfig) -> TaskData:
    root = _shapes_root(config)
    train_path = root / config.data.train_split / "classification.json"
    eval_path = root / config.data.eval_split / "classification.json"
    train, classes, attributes = _read_classification_json(train_path, root)
    held_out, eval_classes, eval_attributes = _read_classification_json(eval_path, root)
    if (eval_classes, eval_attributes) != (classes, attributes):
        raise DataError(eval_path, "its 'classes' or 'attributes' differ from the training split's")
    has_presence = all(r.present is not None for r in train + held_out)
    return TaskData(
        train,
        held_out,
        classes,
        description=f"ShapeScenes {root}",
        attributes=attributes,
        has_presence=has_presence,
    )


def _read_classification_json(path: Path, root: Path) -> tuple[list[Record], list[str], dict[str, list[str]]]:
    """Samples ``{image, label}``; optional auxiliary targets ``{"attributes": {name: [values]}}`` with an
    index per sample under each name, and ``present`` (every class in the image)."""
    data = read_json(path)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("classes"), list)
        or not isinstance(data.get("samples"), list)
    ):
        raise DataError(path, "expected {'classes': [...], 'samples': [{image, label}]}")
    classes = [str(c) for c in data["classes"]]
    index = {name: i for i, name in enumerate(classes)}
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
        isinstance(values, list) and values for values in attributes.values()
    ):
        raise DataError(path, "expected 'attributes' to map names to non-empty lists of values", field="attributes")
    attributes = {str(name): [str(v) for v in values] for name, values in attributes.items()}
    records = []
    for number, sample in enumerate(data["samples"]):
        if not isinstance(sample, dict) or not isinstance(sample.get("image"), str):
            raise DataError(path, "expected an object with a string 'image'", record=number, field="image")
        label = sample.get("label")
        if isinstance(label, str) and label in index:
            label = index[label]
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(classes):
            raise DataError(
                path,
                f"label {label!r} is neither a class name nor an index below {len(classes)}",
                record=number,
                field="label",
            )
        check_inside_root(sample["image"], root, source=path, record=number, field="image")
        targets = {name: _class_index(sample, name, len(values), path, number) for name, values in attributes.items()}
        present = sample.get("present")
        if present is not None and not (
            isinstance(present, list) and all(_is_index(k, len(classes)) for k in present)
        ):
            raise DataError(
                path, f"expected a list of class indices below {len(classes)}", record=number, field="present"
            )
        records.append(Record(sample["image"], root, label=label, attributes=targets, present=present))
    if not records:
        raise DataError(path, "holds no samples")
    return records, classes, attributes


def _is_index(value: Any, count: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def _class_index(sample: dict[str, Any], name: str, count: int, path: Path, number: int) -> int:
    value = sample.get(name)
    if not _is_index(value, count):
        raise DataError(path, f"expected an index below {count}, got {value!r}", record=number, field=name)
    return value


def _shapes_detection(config: PretrainConfig) -> TaskData:
    root = _shapes_root(config)
    train, _, names, cat_ids = _read_coco(root / config.data.train_split / "instances.json", root)
    held_out, ground_truth, eval_names, _ = _read_coco(root / config.data.eval_split / "instances.json", root)
    if eval_names != names:
        raise DataError(root / config.data.eval_split / "instances.json", "its categories differ from training's")
    return TaskData(train, held_out, names, ground_truth, cat_ids, description=f"ShapeScenes {root}")


def _shapes_segmentation(config: PretrainConfig) -> TaskData:
    """Masks hold 0 for background and k for the shape whose COCO category id is k."""
    root = _shapes_root(config)
    splits = {}
    for split in (config.data.train_split, config.data.eval_split):
        records, _, category_names, category_ids = _read_coco(root / split / "instances.json", root)
        for record in records:
            record.mask = root / "masks" / split / (Path(record.image).stem + ".png")
        splits[split] = records
    by_id = dict(zip(category_ids, category_names, strict=True))
    names = ["background"] + [by_id.get(k, f"class_{k}") for k in range(1, max(category_ids) + 1)]
    return TaskData(
        splits[config.data.train_split],
        splits[config.data.eval_split],
        names,
        description=f"ShapeScenes {root}",
    )


# -- ImageFolder ------------------------------------------------------------------------------------------


def _imagefolder(config: PretrainConfig) -> TaskData:
    root = Path(config.data.root)  # type: ignore[arg-type]
    if not root.is_dir():
        raise DataError(root, "ImageFolder directory not found")
    train_dir, eval_dir = root / config.data.train_split, root / config.data.eval_split
    if train_dir.is_dir() and eval_dir.is_dir():
        train, classes = _scan_imagefolder(train_dir, None)
        held_out, _ = _scan_imagefolder(eval_dir, classes)
    else:
        records, classes = _scan_imagefolder(root, None)
        train, held_out = _hold_out(records, config)
    return TaskData(train, held_out, classes, description=f"ImageFolder {root}")


def _scan_imagefolder(folder: Path, classes: list[str] | None) -> tuple[list[Record], list[str]]:
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(folder, "no class folders (expected DIR/CLASS_NAME/IMAGE.jpg)")
    names = [p.name for p in class_dirs]
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(folder / unknown[0], "class folder is not among the training classes")
    index = {name: i for i, name in enumerate(classes or names)}
    records = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(class_dir, f"class folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        records.extend(Record(str(p), label=index[class_dir.name]) for p in files)
    return records, classes or names


# -- COCO -------------------------------------------------------------------------------------------------


def _coco(config: PretrainConfig) -> TaskData:
    annotations = Path(config.data.annotations)  # type: ignore[arg-type]
    given = Path(config.data.root) if config.data.root else None
    train, ground_truth, names, cat_ids = _read_coco(annotations, _coco_image_roots(annotations, given))
    if config.data.val_annotations is not None:
        val_annotations = Path(config.data.val_annotations)
        held_out, ground_truth, eval_names, _ = _read_coco(val_annotations, _coco_image_roots(val_annotations, given))
        if eval_names != names:
            raise DataError(config.data.val_annotations, "its categories differ from the training annotations'")
    else:
        train, held_out = _hold_out(train, config)
        kept = {r.image_id for r in held_out}
        ground_truth = {
            **ground_truth,
            "images": [im for im in ground_truth["images"] if im["id"] in kept],
            "annotations": [a for a in ground_truth["annotations"] if a["image_id"] in kept],
        }
    return TaskData(train, held_out, names, ground_truth, cat_ids, description=f"COCO {annotations}")


def _coco_image_roots(annotations: Path, given: Path | None) -> list[Path]:
    """Folders the images of one COCO instances file may be under, most specific first.

    COCO as downloaded keeps ``annotations/instances_val2017.json`` beside ``val2017/``, and each split's
    images are in the folder its file names (``instances_{split}.json`` → ``{split}/``). With ``--images``
    given, that folder, a split folder inside it, or the split's sibling folder (``--images coco/train2017``
    with ``instances_val2017.json`` → ``coco/val2017``).
    """
    match = re.fullmatch(r"instances_(\w+)\.json", annotations.name)
    split = match.group(1) if match else None
    if given is not None:
        candidates = [given / split, given.parent / split, given] if split else [given]
    else:
        folder = annotations.parent
        candidates = [folder.parent / split, folder / split, folder] if split else [folder]
    return list(dict.fromkeys(candidates))


def _pick_image_root(path: Path, candidates: list[Path], images: list[Any]) -> Path:
    """The first candidate folder holding the file's first image; the error lists every folder tried."""
    first = images[0].get("file_name") if images and isinstance(images[0], dict) else None
    if len(candidates) == 1 or not isinstance(first, str):
        return candidates[0]
    for root in candidates:
        if check_inside_root(first, root, source=path, record=0, field="file_name").is_file():
            return root
    tried = ", ".join(str(root) for root in candidates)
    raise DataError(path, f"image {first!r} not found in any image folder tried: {tried}", record=0, field="file_name")


def _read_coco(
    path: Path, image_roots: Path | list[Path]
) -> tuple[list[Record], dict[str, Any], list[str], list[int]]:
    """Records (crowd and empty boxes left out of training targets) and the ground truth COCOeval needs."""
    data = read_json(path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(path, f"expected a COCO instances file with a '{key}' list")
    roots = image_roots if isinstance(image_roots, list) else [image_roots]
    images_root = _pick_image_root(path, roots, data["images"])
    for number, category in enumerate(data["categories"]):
        category_id = category.get("id") if isinstance(category, dict) else None
        if isinstance(category_id, bool) or not isinstance(category_id, int):
            problem = "missing" if isinstance(category, dict) and "id" not in category else f"got {category_id!r}"
            raise DataError(
                path, f"expected an integer category id ({problem})", record=f"categories[{number}]", field="id"
            )
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    cat_ids = [int(c["id"]) for c in categories]
    class_of = {cid: i for i, cid in enumerate(cat_ids)}
    records: dict[int, Record] = {}
    sizes: dict[int, tuple[float, float]] = {}  # image_id → (width, height), where the file gives them
    for number, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DataError(path, "expected {id, file_name, width, height}", record=number, field="images")
        check_inside_root(image["file_name"], images_root, source=path, record=number, field="file_name")
        records[int(image["id"])] = Record(image["file_name"], images_root, image_id=int(image["id"]))
        if isinstance(image.get("width"), int | float) and isinstance(image.get("height"), int | float):
            sizes[int(image["id"])] = (float(image["width"]), float(image["height"]))
    ground_truth_annotations = []
    for number, ann in enumerate(data["annotations"]):
        where = {"record": f"annotations[{number}] (id {ann.get('id')})" if isinstance(ann, dict) else number}
        if not isinstance(ann, dict):
            raise DataError(path, "expected an object", **where)
        record = records.get(ann.get("image_id"))  # type: ignore[arg-type]
        if record is None:
            raise DataError(
                path,
                f"image_id {ann.get('image_id')!r} matches no entry of 'images'",
                field="image_id",
                **where,
            )
        if ann.get("category_id") not in class_of:
            raise DataError(
                path,
                f"category_id {ann.get('category_id')!r} is not among 'categories'",
                field="category_id",
                **where,
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
            raise DataError(path, f"expected [x, y, width, height], got {bbox!r}", field="bbox", **where)
        x, y, w, h = (float(v) for v in bbox)
        _check_coco_box(x, y, w, h, sizes.get(record.image_id), path, where["record"])
        crowd = int(ann.get("iscrowd", 0))
        if w > 0 and h > 0 and not crowd:
            record.boxes.append((x, y, x + w, y + h))
            record.box_classes.append(class_of[ann["category_id"]])
        ground_truth_annotations.append(
            {
                "id": ann.get("id", number + 1),
                "image_id": record.image_id,
                "category_id": ann["category_id"],
                "bbox": [x, y, w, h],
                "area": float(ann.get("area", w * h)),
                "iscrowd": crowd,
            }
        )
    ground_truth = {
        "images": [
            {
                "id": im["id"],
                "width": im.get("width"),
                "height": im.get("height"),
                "file_name": im["file_name"],
            }
            for im in data["images"]
        ],
        "annotations": ground_truth_annotations,
        "categories": [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in categories],
    }
    if not records:
        raise DataError(path, "holds no images")
    return list(records.values()), ground_truth, [str(c.get("name", c["id"])) for c in categories], cat_ids


def _check_coco_box(
    x: float, y: float, w: float, h: float, size: tuple[float, float] | None, path: Path, where: str | int
) -> None:
    """A COCO [x, y, w, h] box must be finite, non-negative and inside its image (to a pixel of rounding).

    Zero-area boxes stay allowed (they are left out of the training targets); a NaN or negative box was
    silently dropped before, and one outside the image trained on a target no frame holds.
    """
    shown = f"[{x:g}, {y:g}, {w:g}, {h:g}] (x, y, width, height)"
    width, height = size if size else (math.inf, math.inf)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        problem = "is not finite"
    elif w < 0 or h < 0:
        problem = "has a negative width or height"
    elif x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        problem = f"lies outside the {width:g}x{height:g} image"
    else:
        return
    raise DataError(path, f"box {shown} {problem}", record=where, field="bbox")


# -- ADE20K -----------------------------------------------------------------------------------------------


def _ade20k(config: PretrainConfig) -> TaskData:
    root = Path(config.data.root)  # type: ignore[arg-type]
    splits = [_scan_ade20k(root, config.data.train_split), _scan_ade20k(root, config.data.eval_split)]
    names = [f"class_{i}" for i in range(1, ADE20K_NUM_CLASSES + 1)]
    return TaskData(splits[0], splits[1], names, description=f"ADE20K {root}")


def _scan_ade20k(root: Path, split: str) -> list[Record]:
    folder = _ADE20K_SPLITS.get(split, split)
    images_dir, masks_dir = root / "images" / folder, root / "annotations" / folder
    if not images_dir.is_dir():
        raise DataError(images_dir, "ADE20K images folder not found (expected ROOT/images/{training,validation})")
    records = []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = masks_dir / (image.stem + ".png")
        if not mask.is_file():
            raise DataError(mask, f"annotation for image {image.name} not found")
        records.append(Record(str(image), mask=mask))
    if not records:
        raise DataError(images_dir, "holds no images")
    return records


def _hold_out(records: list[Record], config: PretrainConfig) -> tuple[list[Record], list[Record]]:
    order = list(range(len(records)))
    random.Random(config.seed).shuffle(order)
    count = max(1, round(len(records) * config.data.holdout_fraction))
    if count >= len(records):
        raise DataError(config.data.root or "data", f"too few images ({len(records)}) to hold some out")
    held = set(order[:count])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


_LOADERS: dict[tuple[str, str], Callable[[PretrainConfig], TaskData]] = {
    ("classification", "shapes"): _shapes_classification,
    ("classification", "imagefolder"): _imagefolder,
    ("detection", "shapes"): _shapes_detection,
    ("detection", "coco"): _coco,
    ("segmentation", "shapes"): _shapes_segmentation,
    ("segmentation", "ade20k"): _ade20k,
}


# -- frames -----------------------------------------------------------------------------------------------


class FrameDataset(torch.utils.data.Dataset):
    """Records as fixed-size uint8 frames in the model's geometry, with targets in frame pixels.

    A sample holds ``image`` (3, H, W) uint8, ``index``, ``size`` (original width, height) and, per objective,
    ``label``; ``boxes`` (max_boxes, 4) with ``box_classes`` (-1 pads); or ``mask`` (H, W) uint8 with
    255 = ignore (letterbox padding included). An unreadable file yields an ``error`` entry instead, which
    :func:`collate_frames` passes on so the main process raises the :class:`DataError` (a worker cannot).
    """

    def __init__(
        self,
        records: list[Record],
        transform: ImageTransform,
        objective: str,
        *,
        num_classes: int,
        reduce_zero_label: bool = False,
    ) -> None:
        self.records = records
        self.num_classes = num_classes
        self.transform = transform
        self.objective = objective
        self.reduce_zero_label = reduce_zero_label
        self.max_boxes = max((len(r.boxes) for r in records), default=0) if objective == "detection" else 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self._sample(index)
        except DataError as exc:
            return {"error": (exc.file, str(exc)[len(exc.file) + 2 :])}

    def _sample(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = open_image(record.image, record.root)
        mask = _open_mask(record.mask) if self.objective == "segmentation" else None
        width, height = image.size
        frame = self.transform.apply_pil(image)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.array(frame, dtype=np.uint8)).permute(2, 0, 1).contiguous(),
            "index": index,
            "size": torch.tensor([width, height]),
        }
        if self.objective == "classification":
            sample["label"] = record.label
            for name, value in record.attributes.items():
                sample[f"attribute_{name}"] = value
            if record.present is not None:
                present = torch.zeros(self.num_classes, dtype=torch.bool)
                present[record.present] = True
                sample["present"] = present
        elif self.objective == "detection":
            sample["boxes"], sample["box_classes"] = self._frame_boxes(record, width, height)
        else:
            if mask.size != image.size:  # type: ignore[union-attr]
                raise DataError(record.mask, f"mask is {mask.size[0]}x{mask.size[1]}, image is {width}x{height}")
            sample["mask"] = self._frame_mask(mask, record.mask)  # type: ignore[arg-type]
        return sample

    def _frame_boxes(self, record: Record, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = torch.zeros(self.max_boxes, 4)
        classes = torch.full((self.max_boxes,), -1, dtype=torch.long)
        for slot, (box, cls) in enumerate(zip(record.boxes, record.box_classes, strict=True)):
            boxes[slot] = torch.tensor(self.transform.box_to_model(box, width, height))
            classes[slot] = cls
        return boxes, classes

    def _frame_mask(self, mask: Image.Image, path: Path) -> torch.Tensor:
        values = np.array(mask, dtype=np.uint8)
        if self.reduce_zero_label:
            values = np.where(values == 0, IGNORE_LABEL, values - 1).astype(np.uint8)
        labels = values[values != IGNORE_LABEL]
        if labels.size and int(labels.max()) >= self.num_classes:
            raise DataError(path, f"label {int(labels.max())} is not below the {self.num_classes} classes")
        geometry = self.transform.geometry(mask.size[0], mask.size[1])
        resized = Image.fromarray(values).resize(
            (geometry.resized_width, geometry.resized_height), Image.Resampling.NEAREST
        )
        target_h, target_w = self.transform.size
        canvas = Image.new("L", (target_w, target_h), IGNORE_LABEL)
        canvas.paste(resized, (int(geometry.offset_x), int(geometry.offset_y)))
        return torch.from_numpy(np.array(canvas, dtype=np.uint8))


def _open_mask(path: Path | None) -> Image.Image:
    if path is None or not Path(path).is_file():
        raise DataError(path or "mask", "mask file not found")
    try:
        with Image.open(path) as mask:
            mask.load()
            if mask.mode not in ("L", "P", "I;16", "I"):
                raise DataError(path, f"expected a single-channel label PNG, got mode {mask.mode}")
            return mask if mask.mode in ("L", "P") else mask.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot decode mask ({str(exc).splitlines()[0] if str(exc) else exc})") from None


def collate_frames(samples: list[dict[str, Any]]) -> dict[str, Any]:
    for sample in samples:
        if "error" in sample:
            return {"error": sample["error"]}
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
    return batch


def _raise_worker_error(batch: dict[str, Any]) -> None:
    if "error" in batch:
        file, message = batch["error"]
        raise DataError(file, message)


class SampleStream:
    """The training images in a fixed, seeded order: epoch after epoch of permutations.

    Image number ``k`` of the stream is the same for every backbone and batch size, so a budget of N images
    seen means the same N images whatever the batch size, and a resumed run continues where it stopped.
    """

    def __init__(self, num_images: int, seed: int) -> None:
        self.num_images = num_images
        self.seed = seed
        self._epochs: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epochs = {epoch: torch.randperm(self.num_images, generator=generator)}
        return self._epochs[epoch]

    def indices(self, start: int, count: int) -> list[int]:
        out: list[int] = []
        position = start
        while len(out) < count:
            epoch, offset = divmod(position, self.num_images)
            take = min(count - len(out), self.num_images - offset)
            out.extend(self._epoch(epoch)[offset : offset + take].tolist())
            position += take
        return out


class FrameSource:
    """Batches of frames on the device: from an in-memory cache when the set is small, else a DataLoader."""

    def __init__(
        self,
        dataset: FrameDataset,
        device: torch.device,
        *,
        num_workers: int = 0,
        description: str = "loading",
    ) -> None:
        self.dataset = dataset
        self.device = device
        self.num_workers = num_workers
        height, width = dataset.transform.size
        frame_bytes = height * width * (4 if dataset.objective == "segmentation" else 3)
        self.cache = self._build_cache(description) if len(dataset) * frame_bytes <= _CACHE_LIMIT_BYTES else None

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batches: list[list[int]]) -> Iterator[dict[str, Any]]:
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=collate_frames,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            _raise_worker_error(batch)
            yield batch

    def _build_cache(self, description: str) -> dict[str, torch.Tensor]:
        chunk = 64
        batches = [list(range(i, min(i + chunk, len(self.dataset)))) for i in range(0, len(self.dataset), chunk)]
        parts: list[dict[str, Any]] = []
        with progress_bar(transient=True) as bar:
            task = bar.add_task(description, total=len(self.dataset), status="")
            for batch in self._loader(batches):
                parts.append(batch)
                bar.advance(task, len(batch["index"]))
        return {key: torch.cat([p[key] for p in parts]).to(self.device) for key in parts[0]}

    def batches(self, index_batches: list[list[int]]) -> Iterator[dict[str, torch.Tensor]]:
        """The frames of each list of indices, in order, on the device."""
        if self.cache is not None:
            for indices in index_batches:
                picked = torch.tensor(indices, device=self.device)
                yield {key: value[picked] for key, value in self.cache.items()}
            return
        for batch in self._loader(index_batches):
            yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def sequential(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        count = len(self) if limit is None else min(limit, len(self))
        return self.batches([list(range(i, min(i + batch_size, count))) for i in range(0, count, batch_size)])


def num_steps(images_seen: int, batch_size: int) -> int:
    return math.ceil(images_seen / batch_size)


def step_batch(stream: SampleStream, step: int, images_seen: int, batch_size: int) -> list[int]:
    """The stream indices of ``step``: full batches, the last cut so the total is exactly ``images_seen``."""
    start = step * batch_size
    return stream.indices(start, min(batch_size, images_seen - start))
