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

import ssmvlm.utils.io as ssmvlm_io
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
        ("vqav2", ["flat (v2_OpenEnded_mscoco_val2014_questions.json", "VQA API (Questions/", "Hugging Face parquet"]),
        ("vizwiz", ["official (Annotations/val.json)", "flat (val.json)", "vlm-evaluation download/"]),
        ("gqa", ["testdev_balanced_questions.json: file not found", "vlm-evaluation datasets/", "Hugging Face"]),
        ("pope", ["coco_pope_adversarial.json: file not found", "vlm-evaluation download/", "Hugging Face"]),
        ("textvqa-ocr", ["TextVQA_0.5.1_val.json: file not found", "vlm-evaluation datasets/", "Hugging Face"]),
        ("refcoco", ["no refs(unc).json, refs.json or validation parquet shards found", "vlm-evaluation datasets/"]),
    ],
)
def test_missing_layout_lists_the_layouts_tried(tmp_path: Path, task: str, expected: list[str]) -> None:
    family = get_task(task).family
    (tmp_path / family).mkdir()
    with pytest.raises(DataError) as error:
        load(task, {family: tmp_path / family})
    message = one_line(error)
    assert message.startswith(str(tmp_path / family)) and "layouts also tried: " in message
    assert all(layout in message for layout in expected), message


# -- the command line: one line, exit 2, no traceback ---------------------------------------------------------


def cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run ``ssmvlm ARGS`` in-process through its entry point; (exit code, stdout + stderr)."""
    import sys

    from ssmvlm.cli import main

    monkeypatch.setattr(sys, "argv", ["ssmvlm", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in output, output
    assert all(needle in lines[-1] for needle in needles), (needles, output)


# -- LLaVA answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", ["[nan, 0.24, 0.58, 0.83]", "[0.1, inf, 0.58, 0.83]", "[0.1, 0.2, NaN, 0.5]"])
def test_llava_answer_box_with_a_non_finite_coordinate(tmp_path: Path, box: str) -> None:
    from test_train_data import make_mini_llava

    from ssmvlm.data.llava import LlavaLoadReport, load_llava_records

    path = make_mini_llava(tmp_path, 4, size=32)
    records = json.loads(path.read_text())
    records[2]["conversations"][1]["value"] = f"It is at {box}."
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as error:
        load_llava_records(path)
    assert one_line(error).startswith(f"{path} record 2 (id 'mini-2') field 'conversations[1].value': box [")
    assert "non-finite coordinate" in str(error.value)
    report = LlavaLoadReport()
    kept = load_llava_records(path, skip_bad=True, report=report)
    assert [r.id for r in kept] == ["mini-0", "mini-1", "mini-3"] and report.skipped == 1


# -- COCO pretraining ------------------------------------------------------------------------------------------


def write_png(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 40, 200)).save(path)


def coco_2017(root: Path, count: int = 3) -> Path:
    """COCO 2017 as downloaded: annotations/instances_{train,val}2017.json beside train2017/ and val2017/,
    file names without a folder, each split's images in its own folder."""
    for split, first_id in (("train2017", 100), ("val2017", 900)):
        images = [
            {"id": first_id + i, "file_name": f"{first_id + i:012d}.jpg", "width": 40, "height": 30}
            for i in range(count)
        ]
        for image in images:
            write_png(root / split / image["file_name"])
        annotations = [
            {"id": 10 * image["id"], "image_id": image["id"], "category_id": 18, "bbox": [2, 3, 10, 8],
             "area": 80.0, "iscrowd": 0}
            for image in images
        ]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 18, "name": "dog"}]})
        )
    return root / "annotations"


def coco_config(train: Path, val: Path | None = None, images: Path | None = None):
    from ssmvlm.pretrain.config import DataConfig, PretrainConfig

    data = DataConfig(source="coco", annotations=train, val_annotations=val, root=images)
    return PretrainConfig(objective="detection", data=data)


def test_coco_2017_as_downloaded_reads_each_split_from_its_folder(tmp_path: Path) -> None:
    from ssmvlm.pretrain.data import load_task_data

    annotations = coco_2017(tmp_path / "coco")
    for images in (None, tmp_path / "coco", tmp_path / "coco" / "train2017"):
        data = load_task_data(
            coco_config(annotations / "instances_train2017.json", annotations / "instances_val2017.json", images)
        )
        assert {r.root for r in data.train} == {tmp_path / "coco" / "train2017"}, images
        assert {r.root for r in data.eval} == {tmp_path / "coco" / "val2017"}, images
        assert all((r.root / r.image).is_file() for r in data.train + data.eval)


def test_coco_images_not_found_lists_the_folders_tried(tmp_path: Path) -> None:
    from ssmvlm.pretrain.data import load_task_data

    annotations = coco_2017(tmp_path / "coco")
    shutil.rmtree(tmp_path / "coco" / "val2017")
    with pytest.raises(DataError) as error:
        load_task_data(coco_config(annotations / "instances_train2017.json", annotations / "instances_val2017.json"))
    message = one_line(error)
    assert message.startswith(f"{annotations / 'instances_val2017.json'} record 0 field 'file_name': image ")
    assert str(tmp_path / "coco" / "val2017") in message and str(annotations / "val2017") in message


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [
        ([math.nan, 3, 10, 8], "is not finite"),
        ([2, 3, -10, 8], "negative width or height"),
        ([35, 3, 10, 8], "outside the 40x30 image"),
        ([-5, 3, 10, 8], "outside the 40x30 image"),
    ],
)
def test_coco_pretraining_box_is_checked(tmp_path: Path, bbox: list[float], problem: str) -> None:
    from ssmvlm.pretrain.data import load_task_data

    annotations = coco_2017(tmp_path / "coco")
    path = annotations / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["bbox"] = bbox
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as error:
        load_task_data(coco_config(path, annotations / "instances_val2017.json"))
    assert one_line(error).startswith(f"{path} record annotations[1] (id 1010) field 'bbox': box [")
    assert problem in str(error.value)


def test_coco_category_without_id_is_one_line_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    annotations = coco_2017(tmp_path / "coco")
    path = annotations / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["categories"] = [{"name": "dog"}]
    path.write_text(json.dumps(data))
    args = ["pretrain", "run", "--backbone", "vit_nano", "--objective", "detection", "--coco", str(path)]
    code, output = cli([*args, "--out", str(tmp_path / "out")], capsys, monkeypatch)
    assert_one_line_error(code, output, str(path), "categories[0]", "'id'", "missing")


# -- evaluate: tasks checked up front, provenance kept ------------------------------------------------------


class TwoTokenLetters:
    """A fake model whose tokenizer spells TallyQA's letters after 'H' in 2 tokens; it records every call."""

    image_transform = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    def candidate_token_id(self, candidate: str) -> int:
        from ssmvlm.utils.errors import ConfigError

        if len(candidate) == 1 and candidate > "H":
            raise ConfigError("candidates", f"candidate {candidate!r} is 2 tokens, expected exactly 1")
        return len(candidate)  # any id: only whether it is one token matters here

    def generate(self, images, prompts, *, max_new_tokens=128, blind=False):
        self.calls.append("generate")
        return ["yes"] * len(prompts)

    def first_token_probs(self, images, prompts, candidates, *, blind=False):
        self.calls.append("first_token_probs")
        return [dict.fromkeys(candidates, 1 / len(candidates)) for _ in prompts]


def test_a_task_that_cannot_run_fails_before_any_model_work(tmp_path: Path) -> None:
    from ssmvlm.eval import evaluate_model
    from ssmvlm.utils.errors import ConfigError

    model = TwoTokenLetters()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_text('{"earlier": "evaluation"}')
    roots = {"shapes": FIXTURES / "shapes", "tallyqa": FIXTURES / "tallyqa"}
    with pytest.raises(ConfigError) as error:
        evaluate_model(model, ["shapes-pope", "tallyqa"], roots, out_dir=tmp_path / "out", show_progress=False)
    assert one_line(error) == (
        "tasks: task 'tallyqa' cannot run with this model's tokenizer: candidates: candidate 'I' is 2 tokens, "
        "expected exactly 1"
    )
    assert model.calls == []  # shapes-pope, listed first, did not run either
    assert json.loads((tmp_path / "out" / "run.json").read_text()) == {"earlier": "evaluation"}


def test_evaluate_with_bad_data_keeps_the_earlier_run_record(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssmvlm.vlm

    monkeypatch.setattr(ssmvlm.vlm, "load_vlm", lambda run, device=None: TwoTokenLetters())
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "run.json").write_text('{"earlier": "evaluation"}')
    data = tmp_path / "tallyqa"
    data.mkdir()
    record = {"question_id": 1, "image": "../x.jpg", "question": "How many?", "answer": 1}
    (data / "test.json").write_text(json.dumps([record]))
    args = ["evaluate", "--run", str(tmp_path), "--tasks", "tallyqa", "--data", f"tallyqa={data}"]
    code, output = cli([*args, "--out", str(tmp_path / "eval")], capsys, monkeypatch)
    assert_one_line_error(code, output, str(data / "test.json"), "record 1", "field 'image'")
    assert json.loads((tmp_path / "eval" / "run.json").read_text()) == {"earlier": "evaluation"}


# -- train: --threads recorded; a tampered optimizer.pt is refused in one line -----------------------------------


TRAIN_ARGS = [
    "model.backbone=vit_nano",
    "model.image_size=48",
    "recipe=shapes",
    "optim.global_batch_size=4",
    "optim.per_device_batch_size=4",
    "optim.max_steps=2",
    "logging.checkpoint_every=1",
    "--quiet",
]


@pytest.fixture
def restore_threads(monkeypatch: pytest.MonkeyPatch):
    """--threads sets torch's process-wide thread count (and OMP_NUM_THREADS): put both back afterwards."""
    import os

    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(before)))
    yield
    torch.set_num_threads(before)


def test_train_threads_recorded_and_tampered_optimizer_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, restore_threads
) -> None:
    import argparse

    import torch
    from test_train_data import make_mini_llava

    data = make_mini_llava(tmp_path / "data", 4, size=32)
    run = tmp_path / "run"
    args = ["train", *TRAIN_ARGS, f"data.train_json={data}", "--out", str(run)]
    code, output = cli([*args, "--threads", "1", "--stop-after", "1"], capsys, monkeypatch)
    assert code == 0, output
    assert json.loads((run / "run.json").read_text())["threads"] == 1
    optimizer = run / "checkpoints" / "step-00000001" / "optimizer.pt"
    # An object weights_only refuses: PyTorch's own error would advise weights_only=False.
    torch.save({"state": {}, "param_groups": [], "extra": argparse.Namespace(x=1)}, optimizer)
    code, output = cli([*args, "--resume"], capsys, monkeypatch)
    assert_one_line_error(code, output, str(optimizer), "objects other than tensors", "nothing was unpickled")
    assert "weights_only=False" not in output
    optimizer.write_bytes(b"\x80\x02truncated")
    code, output = cli([*args, "--resume"], capsys, monkeypatch)
    assert_one_line_error(code, output, str(optimizer), "not an optimizer state ssmvlm wrote")


# -- undecodable images: named, listed, and found by `data validate` ---------------------------------------------


def test_skip_bad_names_undecodable_images_and_encoder_hash_guards_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file
    from test_train_data import make_mini_llava

    from ssmvlm.backbones import create_vision_backbone
    from ssmvlm.utils.errors import CheckpointError
    from ssmvlm.vlm import load_vlm

    data = make_mini_llava(tmp_path / "data", 6, size=32)
    for name in ("0001.png", "0004.png"):
        (tmp_path / "data" / "images" / name).write_bytes(b"not a png")
    encoder = tmp_path / "encoder.safetensors"
    trunk = create_vision_backbone("vit_nano", image_size=48).trunk.state_dict()
    save_file({k: v.contiguous() for k, v in trunk.items()}, str(encoder))
    run = tmp_path / "run"
    args = ["train", *TRAIN_ARGS, f"data.train_json={data}", f"model.checkpoint={encoder}", "--skip-bad"]
    code, output = cli([*args, "--out", str(run)], capsys, monkeypatch)
    assert code == 0, output
    warning = next(line for line in output.splitlines() if "undecodable" in line)
    assert "2 undecodable images" in warning and "0001.png" in warning and "0004.png" in warning
    assert str(run / "skipped_images.txt") in " ".join(output.split())
    listed = (run / "skipped_images.txt").read_text().splitlines()
    assert [Path(line.split(":")[0]).name for line in listed] == ["0001.png", "0004.png"]

    recorded = json.loads((run / "encoder.json").read_text())
    assert json.loads((run / "run.json").read_text())["encoder_sha256"] == recorded["sha256"]
    load_vlm(run, device="cpu")  # the same encoder loads
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in trunk.items()}, str(encoder))
    with pytest.raises(CheckpointError) as error:
        load_vlm(run, device="cpu")
    assert one_line(error).startswith(f"{run / 'encoder.json'}: the run was trained with encoder weights sha256 ")
    assert recorded["sha256"][:12] in str(error.value)


def test_data_validate_decodes_every_image(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_train_data import make_mini_llava

    data = make_mini_llava(tmp_path, 5, size=32)
    images = tmp_path / "images"
    (images / "0002.png").write_bytes((images / "0002.png").read_bytes()[:60])  # a truncated PNG
    (images / "0003.png").write_bytes(b"\x89PNG garbage")
    code, output = cli(["data", "validate", str(data)], capsys, monkeypatch)
    assert_one_line_error(code, output, str(data), "record id 'mini-2'", "field 'image'", "0002.png", "cannot decode")
    code, output = cli(["data", "validate", str(data), "--skip-bad"], capsys, monkeypatch)
    assert code == 0, output
    flat = " ".join(output.split())
    assert "2 undecodable images: record id 'mini-2'" in flat and "record id 'mini-3'" in flat


# -- ShapeScenes layout detection reads the manifest --------------------------------------------------------------


def test_a_foreign_manifest_json_does_not_make_a_shapescenes_folder(tmp_path: Path) -> None:
    from test_train_data import make_mini_llava

    from ssmvlm.data.llava import SHAPESCENES_GENERATOR, default_image_root, load_llava_records
    from ssmvlm.data.shapes.generate import GENERATOR

    assert SHAPESCENES_GENERATOR == GENERATOR  # the copy kept to avoid importing the renderer
    data = make_mini_llava(tmp_path / "mine" / "train", 3, size=32)  # images/ beside llava.json
    (tmp_path / "mine" / "manifest.json").write_text(json.dumps({"files": ["train/llava.json"], "version": 3}))
    assert default_image_root(data) == data.parent
    assert load_llava_records(data)[0].image == data.parent / "images" / "0000.png"
    (tmp_path / "mine" / "manifest.json").write_text("not json at all")
    assert default_image_root(data) == data.parent
    (tmp_path / "mine" / "manifest.json").write_text(json.dumps({"generator": GENERATOR}))
    assert default_image_root(data) == (tmp_path / "mine").resolve()


# -- faults: a second study on the same folder, a full disk ----------------------------------------------------------

TINY_SPEC = """
name: tiny
benchmark: {shapes: {size: 20, image_size: 32, seed: 0}}
backbones: [vit_nano]
initializations: [random]
resolutions: [32]
llm: tiny-llama-1m
recipe: {preset: shapes, overrides: {optim.max_steps: 1}}
seeds: [0]
eval: {tasks: [shapes-vqa], limit: 2, controls: false, max_new_tokens: 2}
stabilization: {enabled: false}
execution: {device: cpu, gpus: 0, launcher: local, threads: 1}
"""


def test_a_second_study_on_the_same_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import subprocess
    import sys

    from ssmvlm.utils.lock import LOCK_FILE, folder_lock

    out = tmp_path / "study"
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    # The first study: a process holding the folder's lock exactly as run_study takes it.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ssmvlm.utils.lock import folder_lock\n"
         f"with folder_lock({str(out)!r}, 'ssmvlm study'):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, output = cli(["study", "--spec", str(spec), "--out", str(out)], capsys, monkeypatch)
        assert_one_line_error(code, output, f"{out} is in use by another ssmvlm study (pid {holder.pid}")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the second study wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folder_lock(out, "ssmvlm study"):  # a killed holder leaves no stale lock
        assert (out / LOCK_FILE).read_text().strip() == str(__import__("os").getpid())


_REAL_WRITE = ssmvlm_io._write  # taken at import, before any test patches it


class FailingWrites:
    """Makes ssmvlm's file writer raise ENOSPC on its Nth call (and every later one: the disk stays full)."""

    def __init__(self, fail_from: int) -> None:
        self.real = _REAL_WRITE
        self.fail_from = fail_from
        self.calls = 0

    def __call__(self, handle, data) -> None:
        import errno
        import os

        self.calls += 1
        if self.calls >= self.fail_from:
            if self.calls == self.fail_from and len(data) > 4:
                self.real(handle, data[: len(data) // 2])  # a partial write first, as a filling disk does
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real(handle, data)


def test_disk_full_leaves_earlier_files_intact_and_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssmvlm.vlm

    monkeypatch.setattr(ssmvlm.vlm, "load_vlm", lambda run, device=None: TwoTokenLetters())
    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(tmp_path), "--tasks", "shapes-vqa,shapes-pope", "--data", str(FIXTURES / "shapes")]
    args += ["--out", str(out), "--batch-size", "2", "--no-controls"]
    assert cli(args, capsys, monkeypatch)[0] == 0
    reference = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(reference) == {"run.json", "predictions.jsonl", "results.json", "results.md"}

    # A rerun has every prediction: it rewrites run.json, results.json and results.md, in that order.
    for fail_from, failing in ((1, "run.json"), (2, "results.json"), (3, "results.md")):
        monkeypatch.setattr(ssmvlm_io, "_write", FailingWrites(fail_from))
        code, output = cli(args, capsys, monkeypatch)
        assert_one_line_error(code, output, str(out / failing), "cannot write (No space left on device)")
        assert "its previous content is left as it was" in output
        files = {p.name: p.read_bytes() for p in out.iterdir()}
        assert set(files) == set(reference)  # no temporary file is left behind
        assert files[failing] == reference[failing] and files["predictions.jsonl"] == reference["predictions.jsonl"]
        for name in ("run.json", "results.json"):
            json.loads(files[name])  # complete, whichever version

    # The disk fills while predictions are appended: the finished records stay, and a rerun completes them.
    fresh = tmp_path / "fresh"
    fresh_args = [*args[:-5], "--out", str(fresh), "--batch-size", "2", "--no-controls"]
    monkeypatch.setattr(ssmvlm_io, "_write", FailingWrites(4))  # run.json, two prediction records, then full
    code, output = cli(fresh_args, capsys, monkeypatch)
    assert_one_line_error(code, output, str(fresh / "predictions.jsonl"), "the records written before are kept")
    kept = (fresh / "predictions.jsonl").read_text()
    assert kept.count("\n") == 2 and not kept.endswith("}\n{")
    monkeypatch.setattr(ssmvlm_io, "_write", FailingWrites(10**9))
    assert cli(fresh_args, capsys, monkeypatch)[0] == 0
    assert json.loads((fresh / "results.json").read_text())["tasks"] == json.loads(reference["results.json"])["tasks"]


@pytest.mark.parametrize("command", ["evaluate", "pretrain"])
def test_threads_option_is_recorded_in_run_json(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, restore_threads
) -> None:
    import torch

    if command == "evaluate":
        import ssmvlm.vlm

        monkeypatch.setattr(ssmvlm.vlm, "load_vlm", lambda run, device=None: TwoTokenLetters())
        args = ["evaluate", "--run", str(tmp_path), "--tasks", "shapes-pope", "--data", str(FIXTURES / "shapes")]
        args += ["--no-controls"]
    else:
        from ssmvlm.data.shapes import generate_shapescenes

        data = tmp_path / "shapes"
        generate_shapescenes(data, size=20, image_size=32, seed=0, show_progress=False)
        args = ["pretrain", "run", "--backbone", "vit_nano", "--data", str(data), "--images-seen", "8"]
        args += ["--batch-size", "8", "--image-size", "32", "--set", "data.max_eval_images=4"]
    threads = 2 if torch.get_num_threads() == 1 else 1  # not the count already in force
    code, output = cli([*args, "--out", str(tmp_path / "out"), "--threads", str(threads)], capsys, monkeypatch)
    assert code == 0, output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["threads"] == threads
    code, output = cli([*args, "--out", str(tmp_path / "out2"), "--threads", "0"], capsys, monkeypatch)
    assert_one_line_error(code, output, "--threads: must be at least 1, got 0")


def test_pretraining_checkpoint_swap_interrupted_anywhere_resumes_one_complete_step(tmp_path: Path) -> None:
    """Found by benchmarks/fault_injection.py: the checkpoint was overwritten file by file, so a kill between
    the files left step k+1's weights under step k's state.json, and the resumed run redid a step."""
    import torch

    from ssmvlm.pretrain import loop
    from ssmvlm.utils.run_folder import swap_folders

    def model_at(value: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(model.weight, value)
        optimizer = torch.optim.AdamW(model.parameters())
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        return model, optimizer

    def resumed(out: Path) -> tuple[int, float]:
        model, optimizer = model_at(0.0)
        state = loop.resume(model, optimizer, out, torch.device("cpu"))
        return state["step"], float(model.bias.detach()[0]) if state["step"] else math.nan

    def checkpoint_at(out: Path, step: int) -> None:
        model, optimizer = model_at(float(step))
        torch.nn.init.constant_(model.bias, float(step))
        loop.save_checkpoint(model, optimizer, out, {"step": step, "images_seen": step, "train_seconds": 0.0})

    folder = tmp_path / loop.CHECKPOINT_DIR
    staged, old = swap_folders(folder)
    checkpoint_at(tmp_path, 1)
    checkpoint_at(tmp_path, 2)
    assert resumed(tmp_path) == (2, 2.0) and not staged.exists() and not old.exists()
    # Killed while the next checkpoint's files were written: the complete one stays.
    shutil.copytree(folder, staged)
    (staged / "state.json").unlink()
    assert resumed(tmp_path) == (2, 2.0) and not staged.exists()
    # Killed between the renames (old checkpoint moved aside, the next one complete): the next one is taken.
    checkpoint_at(tmp_path, 3)
    shutil.copytree(folder, old)
    folder.rename(staged)
    assert resumed(tmp_path) == (3, 3.0) and not staged.exists() and not old.exists()
    # Killed before the previous checkpoint was deleted.
    shutil.copytree(folder, old)
    assert resumed(tmp_path) == (3, 3.0) and not old.exists()
