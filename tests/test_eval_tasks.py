"""Every task's loader on fixture files in its official layout, its scorer, and bad-input messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ssmvlm.data.transforms import build_image_transform
from ssmvlm.eval.tasks import TASKS, ModelOutput, ScoreContext, dataset_root, get_task
from ssmvlm.eval.tasks.ocidref import clutter_level
from ssmvlm.utils.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
RAW = ScoreContext()


def load(name: str, root: Path = FIXTURES, split: str = "test"):
    task = get_task(name)
    return task, task.load(dataset_root(root, task.family), split)


def test_registry_covers_the_suite() -> None:
    expected = {
        "vqav2",
        "gqa",
        "vizwiz",
        "textvqa-ocr",
        "textvqa-pure",
        "pope",
        "tallyqa",
        "refcoco",
        "refcoco+",
        "refcocog",
        "ocid-ref",
        "shapes-vqa",
        "shapes-pope",
        "shapes-refexp",
    }
    assert expected <= set(TASKS)
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_task("nope")


def test_vqav2_loader_and_score() -> None:
    task, examples = load("vqav2")
    assert [e.id for e in examples] == ["42000", "73001"]
    first = examples[0]
    assert first.prompt == "How many dogs are there?\nAnswer the question using a single word or phrase."
    assert first.image == FIXTURES / "vqav2" / "val2014" / "COCO_val2014_000000000042.jpg"
    assert first.subset == "number" and first.prior_key == "how many"
    assert task.score(first, ModelOutput("Two."), RAW).score == pytest.approx(1.0)
    assert task.score(first, ModelOutput("3"), RAW).score == pytest.approx(0.6)
    assert task.score(examples[1], ModelOutput("disc"), RAW).score == pytest.approx(0.6)


def test_shapes_vqa_finds_images_through_instances() -> None:
    _, examples = load("shapes-vqa")
    assert len(examples) == 4
    assert examples[0].image == FIXTURES / "shapes" / "images" / "test" / "000000.png"
    assert examples[0].image.is_file()
    assert [e.subset for e in examples] == ["attribute", "count", "exist", "count"]


def test_gqa_vizwiz_textvqa_loaders() -> None:
    task, gqa = load("gqa")
    assert gqa[0].image.name == "n288870.jpg" and gqa[0].prior_key == "chooseAttr"
    assert task.score(gqa[0], ModelOutput("Blue"), RAW).score == 1.0

    task, vizwiz = load("vizwiz")
    assert "respond with 'Unanswerable'" in vizwiz[0].prompt
    assert [e.subset for e in vizwiz] == ["answerable", "unanswerable"]
    scored = task.score(vizwiz[1], ModelOutput("Unanswerable"), RAW)
    assert scored.score == 1.0 and scored.extra["predicted_unanswerable"]

    ocr_task, ocr = load("textvqa-ocr")
    _, pure = load("textvqa-pure")
    assert "\nReference OCR token: dakota, digital, camera\n" in ocr[0].prompt
    assert "Reference OCR token" not in pure[0].prompt
    assert pure[0].prompt.endswith("\nAnswer the question using a single word or phrase.")
    assert ocr[0].image == FIXTURES / "textvqa" / "train_images" / "003a8ae2ef43b901.jpg"
    assert ocr_task.score(ocr[0], ModelOutput("dakota digital"), RAW).score == pytest.approx(0.9)


def test_pope_loaders_and_scoring_from_probs_and_text() -> None:
    task, examples = load("pope")
    assert len(examples) == 6 and {e.subset for e in examples} == {"adversarial", "popular", "random"}
    assert examples[0].id == "adversarial/1" and examples[0].target["label"] == "yes"
    no_example = examples[1]
    from_text = task.score(no_example, ModelOutput("Yes, there is a dog."), RAW)
    assert from_text.answer == "yes" and from_text.score == 0.0
    from_probs = task.score(no_example, ModelOutput("Yes", {"Yes": 0.3, "No": 0.7}), RAW)
    assert from_probs.answer == "no" and from_probs.score == 1.0
    assert from_probs.extra == {"text_answer": "yes", "prob_answer": "no"}
    _, shapes = load("shapes-pope")
    assert shapes[0].image == FIXTURES / "shapes" / "images" / "test" / "000000.png"


def test_tallyqa_choices() -> None:
    task, examples = load("tallyqa")
    assert task.candidates[:3] == ("A", "B", "C") and len(task.candidates) == 16 and not task.generate
    assert "\nC. 2\n" in examples[0].prompt
    assert examples[0].prompt.endswith("Answer with the option's letter from the given choices directly.")
    assert [e.subset for e in examples] == ["simple", "complex"]
    probs = dict.fromkeys(task.candidates, 0.01) | {"C": 0.9}
    assert task.score(examples[0], ModelOutput("C", probs), RAW).score == 1.0
    assert task.score(examples[1], ModelOutput("The answer is A."), RAW).answer == 0


def test_refcoco_family_reads_val_refs_per_sentence() -> None:
    task, examples = load("refcoco")
    assert [e.id for e in examples] == ["0/0", "0/1"]  # the train ref is skipped
    target = examples[0].target
    assert target["image_size"] == [640, 480]
    assert target["canonical"] == [
        round(103.93 / 640, 2),
        round(299.99 / 480, 2),
        round(238.15 / 640, 2),
        round(477.78 / 480, 2),
    ]
    assert examples[0].prompt == (
        'Please provide the bounding box coordinate of the region this sentence describes: "the lady"'
    )
    good = task.score(examples[0], ModelOutput(json.dumps(target["canonical"])), RAW)
    assert good.score == 1.0 and good.extra["iou"]["raw"] == pytest.approx(1.0)
    assert task.score(examples[0], ModelOutput("somewhere left"), RAW).score == 0.0
    for name in ("refcoco+", "refcocog"):
        assert len(load(name)[1]) == 2


def test_box_conventions_use_the_model_frame() -> None:
    task, examples = load("shapes-refexp")
    transform = build_image_transform("letterbox", 32)
    example = examples[2]  # 30 x 40 image, box [10, 20, 20, 30] px
    model_box = transform.normalize_box_to_model((10, 20, 20, 30), 30, 40)
    assert model_box == pytest.approx((0.375, 0.5, 0.625, 0.75))
    text = "[0.375, 0.5, 0.625, 0.75]"
    in_model = task.score(example, ModelOutput(text), ScoreContext(transform, "model"))
    assert in_model.score == 1.0 and in_model.extra["iou"]["model"] == pytest.approx(1.0)
    in_raw = task.score(example, ModelOutput(text), ScoreContext(transform, "raw"))
    assert in_raw.extra["iou"]["raw"] < 1.0
    assert task.score(example, ModelOutput(text), RAW).extra["iou"]["model"] is None


def test_ocidref_loader() -> None:
    task, examples = load("ocid-ref")
    assert [e.subset for e in examples] == ["minimum", "medium", "maximum"]
    assert examples[0].target["canonical"] == [
        round(234 / 640, 2),
        round(105 / 480, 2),
        0.5,
        round(191 / 480, 2),
    ]
    assert examples[0].image.parts[-7:-5] == ("OCID-dataset", "ARID20")
    # Acc@0.25 as vlm-evaluation scores OCID-Ref
    assert task.score(examples[2], ModelOutput("[0, 0, 0.5, 1]"), RAW).score == 1.0
    assert [clutter_level(t) for t in (0, 9, 10, 16, 17, 20)] == ["minimum"] * 2 + ["medium"] * 2 + [
        "maximum"
    ] * 2


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("*.png"))
    return root


def test_missing_annotation_field_names_file_record_and_field(data_copy: Path) -> None:
    path = data_copy / "vqav2" / "v2_mscoco_val2014_annotations.json"
    data = json.loads(path.read_text())
    del data["annotations"][1]["answers"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as error:
        load("vqav2", data_copy)
    message = str(error.value)
    assert "v2_mscoco_val2014_annotations.json" in message and "73001" in message and "'answers'" in message
    assert "\n" not in message


def test_duplicate_ids_are_rejected(data_copy: Path) -> None:
    path = data_copy / "pope" / "coco_pope_random.json"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(DataError, match=r"coco_pope_random\.json record random/1: duplicate id"):
        load("pope", data_copy)
    path = data_copy / "shapes" / "test" / "vqa_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"].append(data["annotations"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="duplicate question_id"):
        load("shapes-vqa", data_copy)


def test_non_utf8_and_malformed_files(data_copy: Path) -> None:
    path = data_copy / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl"
    path.write_bytes(path.read_bytes() + b'{"question_id": 9, "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"llava_textvqa_val_v051_ocr.jsonl record line 3: not UTF-8"):
        load("textvqa-ocr", data_copy)
    (data_copy / "gqa" / "testdev_balanced_questions.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(DataError, match=r"testdev_balanced_questions\.json: not UTF-8"):
        load("gqa", data_copy)
    (data_copy / "tallyqa" / "test.json").write_text('[{"question_id": 1, "answer": "two"}]')
    with pytest.raises(DataError, match="record 1 field 'answer'"):
        load("tallyqa", data_copy)


def test_pickled_refs_are_never_opened(data_copy: Path) -> None:
    folder = data_copy / "refcoco" / "refcoco"
    (folder / "refs(unc).json").unlink()
    (folder / "refs(unc).p").write_bytes(b"not really a pickle")
    with pytest.raises(DataError, match=r"pickled refs are never opened.*json.dump"):
        load("refcoco", data_copy)
    (folder / "refs(unc).p").unlink()
    with pytest.raises(DataError, match="no refs"):
        load("refcoco", data_copy)


def test_dataset_root_resolution(tmp_path: Path) -> None:
    assert dataset_root(FIXTURES, "vqav2") == FIXTURES / "vqav2"
    assert dataset_root(FIXTURES / "shapes", "shapes") == FIXTURES / "shapes"
    assert dataset_root({"gqa": tmp_path}, "gqa") == tmp_path
    with pytest.raises(DataError, match="no folder given for dataset 'pope'"):
        dataset_root({"gqa": tmp_path}, "pope")
