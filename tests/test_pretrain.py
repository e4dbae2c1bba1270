"""Matched pretraining: tiny runs of each objective, checkpoint round trips, budget, resume, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from typer.testing import CliRunner

from ssmvlm.backbones import create_vision_backbone
from ssmvlm.cli import app
from ssmvlm.config import from_dict
from ssmvlm.pretrain import PretrainConfig, list_initializations, resolve_initialization, run_pretraining
from ssmvlm.pretrain import loop as loop_module
from ssmvlm.pretrain.classification import ClassificationTask
from ssmvlm.pretrain.data import SampleStream, num_steps, step_batch
from ssmvlm.utils.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError

FAST = {"log_every_steps": 2, "checkpoint_every_steps": 1000}

CLASSES = ["red", "green", "blue"]
_COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220)]
_SIZES = [(64, 64), (64, 48), (48, 64)]


# A tiny dataset in the ShapeScenes on-disk layout (docs/ARCHITECTURE.md): one or two filled rectangles per
# image on grey, the colour is the class, so a few hundred images seen beat chance; some non-square.
def make_scenes(root: Path, *, train: int = 96, val: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations, samples = [], [], []
        for index in range(count):
            width, height = _SIZES[index % len(_SIZES)]
            image = Image.new("RGB", (width, height), (128, 128, 128))
            mask = Image.new("L", (width, height), 0)
            draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
            name = f"images/{split}/{index:05d}.png"
            objects = 1 + (index % 3 == 0)
            cls = rng.randrange(len(CLASSES))  # one class per image, so the classification label is clear
            for _ in range(objects):
                w, h = rng.randint(14, width // 2), rng.randint(14, height // 2)
                x, y = rng.randint(0, width - w), rng.randint(0, height - h)
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=_COLOURS[cls])
                draw_mask.rectangle([x, y, x + w - 1, y + h - 1], fill=cls + 1)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index,
                        "category_id": cls + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "segmentation": [],
                    }
                )
            image.save(root / name)
            mask.save(root / "masks" / split / f"{index:05d}.png")
            images.append({"id": index, "file_name": name, "width": width, "height": height})
            samples.append({"image": name, "label": CLASSES[cls] if index % 2 else cls})  # both label forms
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
        (root / split / "instances.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
        (root / split / "classification.json").write_text(json.dumps({"classes": CLASSES, "samples": samples}))
    return root


def _config(root: Path, **fields) -> PretrainConfig:
    data = {"root": str(root), **fields.pop("data", {})}
    optim = {"lr": 2e-3, "lr_reference_batch": 16, "warmup_fraction": 0.1, **fields.pop("optim", {})}
    return from_dict(PretrainConfig, {**FAST, "batch_size": 16, "optim": optim, "data": data, **fields})


def _losses(out_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scenes(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def classification_run(scenes: Path, home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cls")
    config = _config(scenes, backbone="vit_nano", images_seen=200, image_size=32)
    return out, run_pretraining(config, out, register_as="vit_nano@test-cls", home=home)


def test_classification_learns_and_writes_its_outputs(classification_run: tuple[Path, dict]) -> None:
    out, metrics = classification_run
    losses = _losses(out)
    assert losses[-1] < losses[0]
    assert metrics["top1"] > metrics["chance_top1"] + 0.15
    assert metrics["images_seen"] == 200 and metrics["steps"] == 13  # 12 batches of 16 and one of 8
    for name in ("backbone.safetensors", "head.safetensors", "metrics.json", "config.json", "run.json"):
        assert (out / name).is_file()
    assert not (out / "checkpoint").exists()
    weights = load_file(str(out / "backbone.safetensors"))
    assert weights and not any(k.startswith(("head.", "fc.")) for k in weights)


def test_auxiliary_targets_of_shapescenes_train_beside_the_label(tmp_path: Path) -> None:
    from ssmvlm.data.shapes import generate_shapescenes

    root = tmp_path / "shapes"
    generate_shapescenes(
        root, size=150, image_size=48, seed=3, show_progress=False, namespace="pretrain",
        splits={"train": 0.8, "val": 0.2}, min_objects=1, max_objects=2, clutter="none", non_square_share=0.0,
    )
    config = _config(root, backbone="vit_nano", images_seen=240, image_size=48, auxiliary_targets=True)
    metrics = run_pretraining(config, tmp_path / "out")
    losses = _losses(tmp_path / "out")
    assert losses[-1] < losses[0]
    assert {"top1", "color_top1", "shape_top1", "presence_f1"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("color_top1", "shape_top1", "presence_f1"))
    head = load_file(str(tmp_path / "out" / "head.safetensors"))
    assert {"auxiliary.color.weight", "auxiliary.shape.weight", "auxiliary.present.weight"} <= set(head)
    plain = run_pretraining(_config(root, backbone="vit_nano", images_seen=32, image_size=48), tmp_path / "plain")
    assert "color_top1" not in plain  # off by default: the matched objective is the label alone


def test_classification_targets_are_checked(tmp_path: Path) -> None:
    from ssmvlm.pretrain.data import load_task_data

    root = make_scenes(tmp_path / "scenes", train=4, val=4)
    path = root / "train" / "classification.json"
    data = json.loads(path.read_text())
    data["attributes"] = {"color": ["red", "green", "blue"]}
    for sample in data["samples"]:
        sample["color"], sample["present"] = 1, [0, 2]
    (root / "val" / "classification.json").write_text(json.dumps(data))
    data["samples"][2]["present"] = [0, 7]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"classification\.json.*record 2.*present.*below 3"):
        load_task_data(_config(root))
    data["samples"][2]["present"] = [1]
    del data["samples"][1]["color"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"record 1.*color.*below 3, got None"):
        load_task_data(_config(root))


def test_finished_run_is_reused_not_retrained(classification_run, scenes: Path, monkeypatch) -> None:
    out, metrics = classification_run
    monkeypatch.setattr("ssmvlm.pretrain.run.train", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = run_pretraining(_config(scenes, backbone="vit_nano", images_seen=200, image_size=32), out)
    assert again == metrics
    with pytest.raises(ConfigError, match="images_seen"):
        run_pretraining(_config(scenes, backbone="vit_nano", images_seen=300, image_size=32), out)


def test_checkpoint_round_trip_by_path_and_by_name(classification_run, home: Path, monkeypatch) -> None:
    out, _ = classification_run
    saved = load_file(str(out / "backbone.safetensors"))
    by_path = create_vision_backbone("vit_nano", checkpoint=out / "backbone.safetensors", image_size=32)
    monkeypatch.setenv("SSMVLM_HOME", str(home))
    by_name = create_vision_backbone("vit_nano", checkpoint="vit_nano@test-cls", image_size=32)
    for backbone in (by_path, by_name):
        state = backbone.trunk.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert resolve_initialization("vit_nano@test-cls") == out.resolve() / "backbone.safetensors"
    names = [entry["name"] for entry in list_initializations()]
    # The registry is the module's shared home: in a random test order the dense test may have added its
    # vit_nano@test-det already.
    assert "vit_nano@test-cls" in names and set(names) <= {"vit_nano@test-cls", "vit_nano@test-det"}
    with pytest.raises(ConfigError, match=r"no produced initialization named 'vit_nano@nope'.*vit_nano@test-cls"):
        resolve_initialization("vit_nano@nope")


def test_checkpoint_of_another_architecture_is_refused(
    classification_run, scenes: Path, home: Path, tmp_path, monkeypatch
) -> None:
    out, _ = classification_run
    with pytest.raises(CheckpointError, match="does not fit swin_nano"):
        create_vision_backbone("swin_nano", checkpoint=out / "backbone.safetensors", image_size=32)
    monkeypatch.setenv("SSMVLM_HOME", str(home))
    config = _config(scenes, backbone="swin_nano", objective="detection", init="vit_nano@test-cls", images_seen=16)
    with pytest.raises(CheckpointError, match=r"holds vit_nano weights .* cannot initialize swin_nano"):
        run_pretraining(config, tmp_path / "det")


def test_detection_adapts_a_classification_checkpoint(
    classification_run, scenes: Path, home: Path, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SSMVLM_HOME", str(home))
    out = tmp_path / "det"
    config = _config(
        scenes,
        backbone="vit_nano",
        objective="detection",
        init="vit_nano@test-cls",
        images_seen=192,
        optim={"lr": 3e-3},
        data={"max_eval_images": 32},
    )
    metrics = run_pretraining(config, out, register_as="vit_nano@test-det")
    assert metrics["image_size"] == 64  # twice the classification side
    losses = _losses(out)
    assert losses[-1] < 0.6 * losses[0]
    assert metrics["map50"] > 0.1  # chance is ~0: random boxes almost never reach IoU 0.5
    classification_pos = load_file(str(classification_run[0] / "backbone.safetensors"))["pos_embed"]
    adapted_pos = load_file(str(out / "backbone.safetensors"))["pos_embed"]
    assert adapted_pos.shape[1] > classification_pos.shape[1]  # position embeddings resampled to 64x64
    adapted = create_vision_backbone("vit_nano", checkpoint="vit_nano@test-det", image_size=64)
    assert torch.equal(adapted.trunk.pos_embed, adapted_pos)


def test_segmentation_beats_the_majority_class(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    config = _config(
        scenes,
        backbone="vit_nano",
        objective="segmentation",
        images_seen=128,
        image_size=48,
        optim={"lr": 3e-3},
        data={"max_eval_images": 32},
    )
    metrics = run_pretraining(config, out)
    losses = _losses(out)
    assert losses[-1] < 0.6 * losses[0]
    assert metrics["miou"] > metrics["chance_miou"] + 0.1
    assert metrics["num_classes"] == len(CLASSES) + 1


def test_matched_budget_across_batch_sizes_and_an_ssm(classification_run, scenes: Path, tmp_path: Path) -> None:
    # every batch size consumes the same images in the same order; the last batch is cut to the budget
    stream = SampleStream(num_images=96, seed=3)
    for images in (200, 96, 7):
        seen = {}
        for batch_size in (16, 24, 200):
            batches = [step_batch(stream, s, images, batch_size) for s in range(num_steps(images, batch_size))]
            seen[batch_size] = [i for batch in batches for i in batch]
        assert seen[16] == seen[24] == seen[200] and len(seen[16]) == images
    _, vit_metrics = classification_run
    config = _config(
        scenes,
        backbone="vmamba_nano",
        images_seen=40,
        image_size=32,
        batch_size=24,
        data={"max_eval_images": 8},
        log_every_steps=1,
    )
    ssm_metrics = run_pretraining(config, tmp_path / "ssm")
    assert ssm_metrics["images_seen"] == 40 and ssm_metrics["steps"] == 2  # 24 + 16
    logged = [json.loads(line) for line in (tmp_path / "ssm" / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_seen"] for r in logged if "loss" in r] == [24, 40]
    assert vit_metrics["images_seen"] == 200 and vit_metrics["steps"] == 13


def test_interrupted_run_resumes_from_its_checkpoint(scenes: Path, tmp_path: Path, monkeypatch) -> None:
    config = _config(
        scenes,
        backbone="vit_nano",
        images_seen=96,
        image_size=32,
        batch_size=16,
        checkpoint_every_steps=3,
        log_every_steps=1,
        data={"max_eval_images": 16},
    )
    real_augment = loop_module.augment_batch
    calls = {"n": 0}

    def crash_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(loop_module, "augment_batch", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_pretraining(config, tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 3
    monkeypatch.setattr(loop_module, "augment_batch", real_augment)
    resumed = run_pretraining(config, tmp_path / "resumed")
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 6]  # step 4 logged before the crash was dropped and redone once
    straight = run_pretraining(config, tmp_path / "straight")
    assert resumed["images_seen"] == straight["images_seen"] == 96
    resumed_weights = load_file(str(tmp_path / "resumed" / "backbone.safetensors"))
    straight_weights = load_file(str(tmp_path / "straight" / "backbone.safetensors"))
    assert all(torch.allclose(resumed_weights[k], v, atol=1e-5) for k, v in straight_weights.items())


def test_nan_loss_stops_with_a_clear_error(scenes: Path, tmp_path: Path, monkeypatch) -> None:
    real_loss = ClassificationTask.loss
    monkeypatch.setattr(ClassificationTask, "loss", lambda self, o, b: real_loss(self, o, b) * float("nan"))
    config = _config(scenes, backbone="vit_nano", images_seen=32, image_size=32)
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss at step 1 .*lower optim\.lr"):
        run_pretraining(config, tmp_path / "nan")


def test_bad_inputs_raise_clear_errors(scenes: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "folder"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "cat" / "a.png")
    with pytest.raises(DataError, match=r"dog: class folder holds no images"):
        run_pretraining(_config(folder, data={"source": "imagefolder"}, image_size=32), tmp_path / "a")
    for i in range(4):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / "dog" / f"{i}.png")
    (folder / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png: cannot decode image"):
        run_pretraining(_config(folder, data={"source": "imagefolder"}, image_size=32, images_seen=8), tmp_path / "b")
    # streamed instead of cached (a set too large for memory): the error crosses from the loader worker
    monkeypatch.setattr("ssmvlm.pretrain.data._CACHE_LIMIT_BYTES", 0)
    streamed = _config(folder, data={"source": "imagefolder", "num_workers": 1}, image_size=32, images_seen=8)
    with pytest.raises(DataError, match=r"broken.png: cannot decode image"):
        run_pretraining(streamed, tmp_path / "streamed")
    (folder / "dog" / "broken.png").unlink()
    assert run_pretraining(streamed, tmp_path / "streamed-ok")["images_seen"] == 8

    coco = json.loads((scenes / "train" / "instances.json").read_text())
    coco["annotations"][2]["image_id"] = 9999
    annotations = tmp_path / "bad.json"
    annotations.write_text(json.dumps(coco))
    config = _config(scenes, objective="detection", data={"source": "coco", "annotations": str(annotations)})
    with pytest.raises(DataError, match=r"bad.json record annotations\[2\] .* image_id 9999 matches no entry"):
        run_pretraining(config, tmp_path / "c")
    with pytest.raises(ConfigError, match=r"data\.source: 'imagefolder' has no detection labels"):
        run_pretraining(_config(folder, objective="detection", data={"source": "imagefolder"}), tmp_path / "d")


def test_cli_run_and_list(classification_run, scenes: Path, home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["pretrain", "list", "--home", str(home)])
    assert result.exit_code == 0 and "vit_nano@test-cls" in result.output
    out, metrics = classification_run
    result = runner.invoke(
        app,
        [
            "pretrain",
            "run",
            "--backbone",
            "vit_nano",
            "--data",
            str(scenes),
            "--images-seen",
            "200",
            "--image-size",
            "32",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--set",
            "optim.lr=2e-3",
            "--set",
            "optim.lr_reference_batch=16",
            "--set",
            "optim.warmup_fraction=0.1",
            "--set",
            "log_every_steps=2",
            "--set",
            "checkpoint_every_steps=1000",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"top1 {metrics['top1']:.4f}" in result.output
    result = runner.invoke(app, ["pretrain", "run", "--backbone", "vit_nano", "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
