"""The LLM warm-up on symbolic scenes: the ground-truth grids, a tiny warm-up that learns, and a VLM run from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssmvlm.config import load_config
from ssmvlm.data.shapes.scene import COLORS, SHAPES, SIZES
from ssmvlm.data.transforms import build_image_transform
from ssmvlm.train import TrainConfig, train_vlm
from ssmvlm.train.warmup import CELL_FEATURES, scene_grid, scene_grids, warm_up_llm
from ssmvlm.utils.errors import DataError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssmvlm.data.shapes import generate_shapescenes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapescenes(root, size=50, image_size=48, seed=0, show_progress=False, max_objects=2, refs_per_image=1)
    return root


def config(root: Path, *extra: str) -> TrainConfig:
    base = [
        "model.image_size=48",
        "model.llm=tiny-llama-1m",
        "model.image_position=after-question",
        "recipe=shapes",
        "data.split_turns=true",
        f"data.train_json={root}/train/llava.json",
        "logging.log_every=5",
    ]
    return load_config(TrainConfig, None, [*base, *extra])


def test_scene_grid_marks_each_object_in_the_model_frame() -> None:
    transform = build_image_transform("letterbox", 48)
    # A 96 x 48 image letterboxed into 48 x 48: the object on its left half lands in the top-left of the frame.
    star = {"shape": "star", "color": "red", "size": "large", "box": [0, 0, 48, 48]}
    scene = {"width": 96, "height": 48, "objects": [star]}
    grid = scene_grid(scene, transform, grid=4)
    assert grid.shape == (16, CELL_FEATURES)
    covered = [index for index in range(16) if grid[index, -1] == 0]
    assert covered == [4, 5, 8, 9]  # rows 1-2 (the letterbox's image band), columns 0-1 (the image's left half)
    cell = grid[4]
    assert cell[list(COLORS).index("red")] == 1 and cell[len(COLORS) + SHAPES.index("star")] == 1
    assert cell[len(COLORS) + len(SHAPES) + list(SIZES).index("large")] == 1
    assert torch.allclose(cell[-5:-1], torch.tensor([0.0, 0.25, 0.5, 0.75]))
    assert torch.equal(grid[0], torch.eye(CELL_FEATURES)[-1])  # an empty cell: only the flag


def test_scene_grids_follow_the_image_order_and_need_every_scene(shapes: Path) -> None:
    scenes = json.loads((shapes / "train" / "scenes.json").read_text())
    paths = [shapes / scenes[2]["file_name"], shapes / scenes[0]["file_name"]]
    transform = build_image_transform("letterbox", 48)
    grids = scene_grids(shapes / "train" / "llava.json", paths, transform, grid=6)
    assert torch.equal(grids[0], scene_grid(scenes[2], transform, 6)) and not torch.equal(grids[0], grids[1])
    with pytest.raises(DataError, match="no scene for image"):
        scene_grids(shapes / "train" / "llava.json", [shapes / "elsewhere.png"], transform, grid=6)


def test_warm_up_learns_and_a_vlm_starts_from_its_llm(shapes: Path, tmp_path: Path) -> None:
    warm = config(shapes, "optim.max_steps=60", "model.llm_init_std=0.088")
    llm = warm_up_llm(warm, tmp_path / "warm", show_progress=False)
    assert (llm / "config.json").is_file() and (llm / "tokenizer.json").is_file()
    records = [json.loads(line) for line in (tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 60 and records[-1]["loss"] < 0.5 * records[0]["loss"], records
    assert json.loads((tmp_path / "warm" / "run.json").read_text())["stage"] == "llm-warmup"
    before = (llm / "model.safetensors").read_bytes()
    assert warm_up_llm(config(shapes, "optim.max_steps=60"), tmp_path / "warm", show_progress=False) == llm
    assert (llm / "model.safetensors").read_bytes() == before  # a finished warm-up is kept, not redone

    vlm = config(shapes, "optim.max_steps=2", "model.backbone=vit_nano", f"model.llm={llm}")
    run = train_vlm(vlm, tmp_path / "vlm", show_progress=False)
    assert (run / "model.safetensors").is_file()
