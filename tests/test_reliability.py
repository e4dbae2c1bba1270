"""Bad input in real layouts, the layouts themselves, and faults (issue 20).

Each defect is written into a copy of a fixture in its official layout; the loader must stop with a one-line
error naming the file, the record and the field (or skip and count under ``--skip-bad``).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from ssmvlm.eval.tasks import dataset_root, get_task
from ssmvlm.utils.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def load(name: str, root: Path, split: str = "test"):
    task = get_task(name)
    return task.load(dataset_root(root, task.family), split)


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("*.png"))
    return root


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# -- image paths stay inside the dataset root ---------------------------------------------------------------


@pytest.mark.parametrize("image", ["../../secret.jpg", "/etc/passwd", "VG_100K/../../x.jpg"])
def test_tallyqa_image_outside_the_root_is_refused(data_copy: Path, image: str) -> None:
    path = data_copy / "tallyqa" / "test.json"
    records = json.loads(path.read_text())
    records[1]["image"] = image
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as error:
        load("tallyqa", data_copy)
    assert one_line(error).startswith(f"{path} record 2 field 'image': image path")
    assert "escapes the data root" in str(error.value)


@pytest.mark.parametrize("image", ["../COCO_val2014_000000310196.jpg", "/tmp/COCO_val2014_000000310196.jpg"])
def test_pope_image_outside_the_root_is_refused(data_copy: Path, image: str) -> None:
    path = data_copy / "pope" / "coco_pope_popular.json"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[0]["image"] = image
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataError) as error:
        load("pope", data_copy)
    assert one_line(error).startswith(f"{path} record {lines[0]['question_id']} field 'image'")


def test_inside_paths_still_load(data_copy: Path) -> None:
    examples = load("tallyqa", data_copy)
    assert examples[0].image == data_copy / "tallyqa" / "VG_100K" / "2410.jpg"


# -- ground-truth boxes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [
        ([math.nan, 299.99, 134.22, 177.79], "is not finite"),
        ([103.93, 299.99, -5.0, 177.79], "x2 < x1"),
        ([-20.0, 299.99, 134.22, 177.79], "outside the 640x480 image"),
        ([600.0, 299.99, 134.22, 177.79], "outside the 640x480 image"),
    ],
)
def test_refcoco_bad_ground_truth_box(data_copy: Path, bbox: list[float], problem: str) -> None:
    path = data_copy / "refcoco" / "refcoco" / "instances.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = bbox
    path.write_text(json.dumps(data))  # NaN is written as the bare token NaN, which json reads back
    with pytest.raises(DataError) as error:
        load("refcoco", data_copy)
    assert one_line(error).startswith(f"{path} record 1719310 field 'bbox': box [")
    assert problem in str(error.value)


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [
        ("[NaN, 105, 320, 191]", "is not finite"),
        ("[234, 105, 200, 191]", "x2 < x1"),
        ("[-50, 105, 320, 191]", "outside the 640x480 image"),
        ("[234, 105, 320, 900]", "outside the 640x480 image"),
    ],
)
def test_ocidref_bad_ground_truth_box(data_copy: Path, bbox: str, problem: str) -> None:
    path = data_copy / "ocid-ref" / "val_expressions.json"
    data = json.loads(path.read_text())
    data["0"]["bbox"] = bbox
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as error:
        load("ocid-ref", data_copy)
    assert one_line(error).startswith(f"{path} record 0 field 'bbox'") and problem in str(error.value)


def test_box_on_the_image_edge_is_kept(data_copy: Path) -> None:
    examples = load("ocid-ref", data_copy)  # the fixture's third box is the whole 640x480 image
    assert examples[2].target["box_px"] == [0.0, 0.0, 640.0, 480.0]


# -- layouts -------------------------------------------------------------------------------------------------


def test_vqav2_in_the_official_api_layout(tmp_path: Path) -> None:
    flat = FIXTURES / "vqav2"
    root = tmp_path / "VQA"  # github.com/GT-Vision-Lab/VQA: Questions/, Annotations/, Images/mscoco/val2014/
    (root / "Questions").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "Images" / "mscoco" / "val2014").mkdir(parents=True)
    shutil.copy(flat / "v2_OpenEnded_mscoco_val2014_questions.json", root / "Questions")
    shutil.copy(flat / "v2_mscoco_val2014_annotations.json", root / "Annotations")
    examples = load("vqav2", {"vqav2": root})
    assert [e.id for e in examples] == ["42000", "73001"]
    assert examples[0].image == root / "Images" / "mscoco" / "val2014" / "COCO_val2014_000000000042.jpg"
    assert load("vqav2", FIXTURES)[0].image == flat / "val2014" / "COCO_val2014_000000000042.jpg"


def test_vizwiz_val_json_given_flat(tmp_path: Path) -> None:
    root = tmp_path / "vizwiz"
    root.mkdir()
    shutil.copy(FIXTURES / "vizwiz" / "Annotations" / "val.json", root / "val.json")
    examples = load("vizwiz", {"vizwiz": root})
    assert examples[0].image == root / "val" / "VizWiz_val_00000000.jpg"
    assert [e.id for e in examples] == [e.id for e in load("vizwiz", FIXTURES)]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("vqav2", ["flat (v2_OpenEnded_mscoco_val2014_questions.json", "VQA API (Questions/"]),
        ("vizwiz", ["official (Annotations/val.json)", "flat (val.json)"]),
    ],
)
def test_missing_layout_lists_the_layouts_tried(tmp_path: Path, task: str, expected: list[str]) -> None:
    family = get_task(task).family
    (tmp_path / family).mkdir()
    with pytest.raises(DataError) as error:
        load(task, {family: tmp_path / family})
    message = one_line(error)
    assert message.startswith(f"{tmp_path / family}: no known layout found; tried: ")
    assert all(layout in message for layout in expected)
