"""Other homes of the evaluation sets: Hugging Face parquet shards and vlm-evaluation's folders.

Parquet fixtures are written with pyarrow in the schema of the public dataset cards (the ``datasets`` Image
feature is a struct {bytes, path}); vlm-evaluation fixtures copy the official fixtures under its file names.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ssmvlm.eval.runner import load_image
from ssmvlm.eval.tasks import get_task
from ssmvlm.eval.tasks.hf_parquet import ParquetImage, find_shards
from ssmvlm.utils.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ANSWER = pa.struct([("answer", pa.string()), ("answer_confidence", pa.string()), ("answer_id", pa.int64())])


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write(path: Path, rows: list[dict], schema: pa.Schema, row_group_size: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)
    return path


def color(index: int) -> tuple[int, int, int]:
    return (10 * index, 255 - 10 * index, 7)


VQAV2_SCHEMA = pa.schema(
    [
        ("question_type", pa.string()),
        ("multiple_choice_answer", pa.string()),
        ("answers", pa.list_(ANSWER)),
        ("image_id", pa.int64()),
        ("answer_type", pa.string()),
        ("question_id", pa.int64()),
        ("question", pa.string()),
        ("image", IMAGE),
    ]
)


def vqav2_row(qid: int) -> dict:
    answers = [{"answer": "yes" if k < 7 else "no", "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]
    return {
        "question_type": "is the",
        "multiple_choice_answer": "yes",
        "answers": answers,
        "image_id": 100 + qid,
        "answer_type": "yes/no" if qid % 2 else "other",
        "question_id": qid,
        "question": f"Is this question {qid}?",
        "image": png(color(qid)),
    }


@pytest.fixture
def vqav2_snapshot(tmp_path: Path) -> Path:
    """Three validation shards (5 rows, row groups of 2) and a train shard that must not be read."""
    root = tmp_path / "VQAv2"
    qids = [[0, 1], [2, 3], [4]]
    for shard, ids in enumerate(qids):
        write(root / "data" / f"validation-{shard:05d}-of-00003.parquet", [vqav2_row(q) for q in ids], VQAV2_SCHEMA)
    write(root / "data" / "train-00000-of-00001.parquet", [vqav2_row(99)], VQAV2_SCHEMA)
    return root


def test_vqav2_reads_every_shard_and_says_how_many_rows(vqav2_snapshot: Path, capsys) -> None:
    task = get_task("vqav2")
    examples = task.load(vqav2_snapshot, "test")
    assert [e.id for e in examples] == ["0", "1", "2", "3", "4"]
    assert "read 5 rows from 3 parquet shard(s)" in capsys.readouterr().err
    third = examples[3]
    assert third.prompt == "Is this question 3?\nAnswer the question using a single word or phrase."
    assert third.target["answers"].count("yes") == 7 and third.target["canonical"] == "yes"
    assert (third.subset, third.prior_key) == ("yes/no", "is the")
    # the image is the row's own, decoded lazily from its shard (the second shard's second row)
    assert isinstance(third.image, ParquetImage) and third.image.file.name.startswith("validation-00001")
    assert load_image(third, task).getpixel((0, 0)) == color(3)
    assert load_image(examples[4], task).getpixel((0, 0)) == color(4)


def test_missing_column_names_the_shard_and_the_column(vqav2_snapshot: Path) -> None:
    bad = vqav2_snapshot / "data" / "validation-00001-of-00003.parquet"
    table = pq.read_table(bad).drop_columns(["question"])
    pq.write_table(table, bad)
    with pytest.raises(
        DataError, match=r"validation-00001-of-00003\.parquet: not the lmms-lab/VQAv2 layout: .*question"
    ):
        get_task("vqav2").load(vqav2_snapshot, "test")


def test_a_truncated_shard_is_a_one_line_error(vqav2_snapshot: Path) -> None:
    shard = vqav2_snapshot / "data" / "validation-00002-of-00003.parquet"
    shard.write_bytes(shard.read_bytes()[:100])  # a download cut short
    with pytest.raises(DataError, match=r"validation-00002-of-00003\.parquet: not a readable parquet file"):
        get_task("vqav2").load(vqav2_snapshot, "test")


def test_image_column_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    schema = pa.schema([f if f.name != "image" else pa.field("image", pa.string()) for f in VQAV2_SCHEMA])
    row = {**vqav2_row(0), "image": "not an image"}
    write(tmp_path / "validation-00000-of-00001.parquet", [row], schema)
    with pytest.raises(DataError, match="field 'image': expected an image"):
        get_task("vqav2").load(tmp_path, "test")


def test_shards_found_at_any_depth_and_in_convert_folders(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "b" / "validation-00000-of-00002.parquet", [vqav2_row(0)], VQAV2_SCHEMA)
    b = write(tmp_path / "default" / "validation" / "0000.parquet", [vqav2_row(1)], VQAV2_SCHEMA)
    write(tmp_path / "default" / "test" / "0000.parquet", [vqav2_row(2)], VQAV2_SCHEMA)
    write(tmp_path / ".cache" / "validation-00000-of-00001.parquet", [vqav2_row(3)], VQAV2_SCHEMA)
    assert find_shards(tmp_path, ("validation",)) == [a, b]
    assert find_shards(tmp_path, ("val",)) == []


def test_gqa_joins_the_instruction_and_image_configs(tmp_path: Path) -> None:
    types = pa.struct([("structural", pa.string()), ("semantic", pa.string()), ("detailed", pa.string())])
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("imageId", pa.string()),
            ("question", pa.string()),
            ("answer", pa.string()),
            ("fullAnswer", pa.string()),
            ("isBalanced", pa.bool_()),
            ("types", types),
        ]
    )
    rows = [
        {"id": "q1", "imageId": "n2", "question": "What is it?", "answer": "cat", "fullAnswer": "A cat.",
         "isBalanced": True, "types": {"structural": "query", "semantic": "obj", "detailed": "objThis"}},
        {"id": "q2", "imageId": "n1", "question": "Is it red?", "answer": "no", "fullAnswer": "No.",
         "isBalanced": True, "types": {"structural": "verify", "semantic": "attr", "detailed": "verifyAttr"}},
    ]  # fmt: skip
    write(tmp_path / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", rows, schema)
    images = pa.schema([("id", pa.string()), ("image", IMAGE)])
    write(
        tmp_path / "testdev_balanced_images" / "testdev-00000-of-00001.parquet",
        [{"id": "n1", "image": png(color(1))}, {"id": "n2", "image": png(color(2))}],
        images,
    )
    task = get_task("gqa")
    examples = task.load(tmp_path, "test")
    assert [(e.id, e.subset, e.prior_key, e.target["answer"]) for e in examples] == [
        ("q1", "query", "objThis", "cat"),
        ("q2", "verify", "verifyAttr", "no"),
    ]
    assert load_image(examples[0], task).getpixel((0, 0)) == color(2)


TEXTVQA_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("question_id", pa.int32()),
        ("question", pa.string()),
        ("question_tokens", pa.list_(pa.string())),
        ("image", IMAGE),
        ("image_width", pa.int32()),
        ("image_height", pa.int32()),
        ("flickr_original_url", pa.string()),
        ("flickr_300k_url", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("image_classes", pa.list_(pa.string())),
        ("set_name", pa.string()),
        ("ocr_tokens", pa.list_(pa.string())),
    ]
)


def test_textvqa_with_and_without_ocr_tokens(tmp_path: Path) -> None:
    row = {
        "image_id": "abc", "question_id": 34602, "question": "what brand is this?", "question_tokens": [],
        "image": png(color(4)), "image_width": 8, "image_height": 6, "flickr_original_url": "",
        "flickr_300k_url": "", "answers": ["nokia"] * 6 + ["nokia phone"] * 4, "image_classes": [],
        "set_name": "val", "ocr_tokens": ["nokia", "5:30"],
    }  # fmt: skip
    write(tmp_path / "data" / "validation-00000-of-00001.parquet", [row], TEXTVQA_SCHEMA)
    (ocr,) = get_task("textvqa-ocr").load(tmp_path, "test")
    (pure,) = get_task("textvqa-pure").load(tmp_path, "test")
    suffix = "\nAnswer the question using a single word or phrase."
    assert ocr.prompt == "what brand is this?\nReference OCR token: nokia, 5:30" + suffix
    assert pure.prompt == "what brand is this?" + suffix
    assert ocr.target["canonical"] == "nokia" and ocr.id == "34602"


def test_vizwiz_answerable_follows_the_category(tmp_path: Path) -> None:
    schema = pa.schema(
        [
            ("question_id", pa.string()),
            ("image", IMAGE),
            ("question", pa.string()),
            ("answers", pa.list_(pa.string())),
            ("category", pa.string()),
        ]
    )
    rows = [
        {"question_id": "VizWiz_val_00000000", "image": png(color(1)), "question": "What is this?",
         "answers": ["unanswerable"] * 10, "category": "unanswerable"},
        {"question_id": "VizWiz_val_00000001", "image": png(color(2)), "question": "What color?",
         "answers": ["blue"] * 10, "category": "other"},
    ]  # fmt: skip
    write(tmp_path / "data" / "val-00000-of-00002.parquet", rows[:1], schema)
    write(tmp_path / "data" / "val-00001-of-00002.parquet", rows[1:], schema)
    examples = get_task("vizwiz").load(tmp_path, "test")
    assert [(e.id, e.target["answerable"], e.subset) for e in examples] == [
        ("VizWiz_val_00000000", False, "unanswerable"),
        ("VizWiz_val_00000001", True, "answerable"),
    ]
    assert "respond with 'Unanswerable'" in examples[0].prompt


POPE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question_id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("image_source", pa.string()),
        ("image", IMAGE),
        ("category", pa.string()),
    ]
)


def pope_row(qid: str, category: str, answer: str = "yes") -> dict:
    return {"id": qid, "question_id": qid, "question": "Is there a dog in the image?", "answer": answer,
            "image_source": "COCO_val2014_000000000001", "image": png(color(1)), "category": category}  # fmt: skip


def test_pope_default_config_takes_the_split_from_the_category(tmp_path: Path) -> None:
    rows = [pope_row("1", "adversarial"), pope_row("1", "popular", "no"), pope_row("1", "random")]
    write(tmp_path / "data" / "test-00000-of-00002.parquet", rows[:2], POPE_SCHEMA)
    write(tmp_path / "data" / "test-00001-of-00002.parquet", rows[2:], POPE_SCHEMA)
    # a full snapshot also holds the Full config: it must not be counted twice
    write(tmp_path / "Full" / "adversarial-00000-of-00001.parquet", rows[:1], POPE_SCHEMA)
    examples = get_task("pope").load(tmp_path, "test")
    assert [(e.id, e.subset, e.target["label"]) for e in examples] == [
        ("adversarial/1", "adversarial", "yes"),
        ("popular/1", "popular", "no"),
        ("random/1", "random", "yes"),
    ]


def test_pope_full_config_and_a_bad_answer(tmp_path: Path) -> None:
    for split in ("adversarial", "popular", "random"):
        write(tmp_path / "Full" / f"{split}-00000-of-00001.parquet", [pope_row("7", split)], POPE_SCHEMA)
    assert [e.id for e in get_task("pope").load(tmp_path, "test")] == ["adversarial/7", "popular/7", "random/7"]
    write(tmp_path / "Full" / "random-00000-of-00001.parquet", [pope_row("7", "random", "maybe")], POPE_SCHEMA)
    with pytest.raises(DataError, match=r"random-00000-of-00001\.parquet record row 0 field 'answer'"):
        get_task("pope").load(tmp_path, "test")


REFCOCO_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("image", IMAGE),
        ("question", pa.string()),
        ("answer", pa.list_(pa.string())),
        ("segmentation", pa.list_(pa.float32())),
        ("bbox", pa.list_(pa.float32())),
        ("iscrowd", pa.int8()),
        ("file_name", pa.string()),
    ]
)


def test_lmms_refcoco_variants_with_one_example_per_sentence(tmp_path: Path) -> None:
    row = {
        "question_id": "123", "image": png(color(5), size=(200, 100)), "question": "caption this",
        "answer": ["man on left", "guy in red"], "segmentation": [], "bbox": [20.0, 10.0, 60.0, 50.0],
        "iscrowd": 0, "file_name": "COCO_train2014_000000000123.jpg",
    }  # fmt: skip
    write(tmp_path / "RefCOCOplus" / "data" / "val-00000-of-00001.parquet", [row], REFCOCO_SCHEMA)
    write(tmp_path / "RefCOCO" / "data" / "val-00000-of-00001.parquet", [{**row, "question_id": "9"}], REFCOCO_SCHEMA)
    examples = get_task("refcoco+").load(tmp_path, "test")
    assert [e.id for e in examples] == ["123/0", "123/1"]
    assert examples[1].prompt.endswith('describes: "guy in red"')
    target = examples[0].target
    assert target["box_px"] == [20.0, 10.0, 80.0, 60.0] and target["image_size"] == [200, 100]
    assert target["canonical"] == [0.1, 0.1, 0.4, 0.6]
    assert [e.id for e in get_task("refcoco").load(tmp_path, "test")] == ["9/0", "9/1"]


def test_jxu124_refcoco_reads_every_validation_shard(tmp_path: Path) -> None:
    """The jxu124 release used to be cut to its first matching shard; every shard is read now."""
    schema = pa.schema(
        [
            ("ref_id", pa.int64()),
            ("split", pa.string()),
            ("sentences", pa.list_(pa.struct([("raw", pa.string()), ("sent", pa.string()), ("sent_id", pa.int64())]))),
            ("raw_anns", pa.string()),
            ("raw_image_info", pa.string()),
        ]
    )

    def row(ref_id: int) -> dict:
        ann = {"id": 1000 + ref_id, "bbox": [1, 2, 10, 10], "category_id": 3}
        info = {"id": 50 + ref_id, "file_name": f"COCO_train2014_{50 + ref_id:012d}.jpg", "width": 40, "height": 30}
        sentence = {"raw": f"thing {ref_id}", "sent": f"thing {ref_id}", "sent_id": ref_id * 10}
        return {"ref_id": ref_id, "split": "val", "sentences": [sentence], "raw_anns": json.dumps(ann),
                "raw_image_info": json.dumps(info)}  # fmt: skip

    folder = tmp_path / "refcoco"
    write(folder / "data" / "validation-00000-of-00002-aaaa.parquet", [row(1)], schema)
    write(folder / "data" / "validation-00001-of-00002-bbbb.parquet", [row(2)], schema)
    write(folder / "data" / "train-00000-of-00001-cccc.parquet", [{**row(3), "split": "train"}], schema)
    examples = get_task("refcoco").load(tmp_path, "test")
    assert [e.id for e in examples] == ["1/10", "2/20"]
    assert examples[1].image == tmp_path / "train2014" / "COCO_train2014_000000000052.jpg"


# -- vlm-evaluation ----------------------------------------------------------------------------------------


def test_vlm_eval_download_names(tmp_path: Path) -> None:
    download = tmp_path / "download"
    vqa = download / "vqa-v2"
    vqa.mkdir(parents=True)
    shutil.copy(FIXTURES / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json", vqa / "v2_val2014_questions.json")
    shutil.copy(FIXTURES / "vqav2" / "v2_mscoco_val2014_annotations.json", vqa / "v2_val2014_annotations.json")
    (vqa / "images_val2014").mkdir()
    official = get_task("vqav2").load(FIXTURES / "vqav2", "test")
    ours = get_task("vqav2").load(tmp_path, "test")
    assert [(e.id, e.prompt, e.target) for e in ours] == [(e.id, e.prompt, e.target) for e in official]
    assert ours[0].image.parent == vqa / "images_val2014"

    pope = download / "pope"
    shutil.copytree(FIXTURES / "pope", pope)
    (pope / "val_images").mkdir()
    examples = get_task("pope").load(tmp_path, "test")
    assert [e.id for e in examples] == [e.id for e in get_task("pope").load(FIXTURES / "pope", "test")]
    assert all(e.image.parent == pope / "val_images" for e in examples)

    vizwiz = download / "vizwiz"
    vizwiz.mkdir()
    shutil.copy(FIXTURES / "vizwiz" / "Annotations" / "val.json", vizwiz / "val.json")
    (vizwiz / "val_images").mkdir()
    examples = get_task("vizwiz").load(tmp_path, "test")
    official = get_task("vizwiz").load(FIXTURES / "vizwiz", "test")
    assert [(e.id, e.target) for e in examples] == [(e.id, e.target) for e in official]
    assert examples[0].image.parent == vizwiz / "val_images"

    text = download / "text-vqa"
    text.mkdir()
    shutil.copy(FIXTURES / "textvqa" / "TextVQA_0.5.1_val.json", text)
    shutil.copy(FIXTURES / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl", text / "textvqa_val_v051_ocr.jsonl")
    (text / "train_val_images").mkdir()
    for name in ("textvqa-ocr", "textvqa-pure"):
        examples = get_task(name).load(tmp_path, "test")
        official = get_task(name).load(FIXTURES / "textvqa", "test")
        assert [(e.id, e.prompt) for e in examples] == [(e.id, e.prompt) for e in official]
        assert examples[0].image.parent == text / "train_val_images"


def test_vlm_eval_prepared_index_files(tmp_path: Path) -> None:
    images = tmp_path / "download" / "refcoco" / "train2014"
    images.mkdir(parents=True)
    Image.new("RGB", (200, 100)).save(images / "COCO_train2014_000000000009.jpg")
    entry = {"ref_expression": "left man", "img_path": "download/refcoco/train2014/COCO_train2014_000000000009.jpg",
             "bbox": [0.1, 0.1, 0.4, 0.6], "split": "val", "ref_id": 4, "sent_id": 8}  # fmt: skip
    index = {
        "11": {**entry, "example_id": 11, "refer_dataset": "RefCOCO"},
        "12": {**entry, "example_id": 12, "refer_dataset": "RefCOCO+", "sent_id": 9},
    }
    (tmp_path / "datasets" / "refcoco").mkdir(parents=True)
    (tmp_path / "datasets" / "refcoco" / "metadata-full.json").write_text(json.dumps(index))
    (refcoco,) = get_task("refcoco").load(tmp_path, "test")
    (plus,) = get_task("refcoco+").load(tmp_path / "datasets" / "refcoco", "test")  # the datasets/ folder itself
    assert (refcoco.id, plus.id) == ("4/8", "4/9")
    assert refcoco.target["canonical"] == [0.1, 0.1, 0.4, 0.6]
    assert refcoco.target["box_px"] == pytest.approx([20.0, 10.0, 80.0, 60.0])
    assert refcoco.image == images / "COCO_train2014_000000000009.jpg"

    pope = {"5": {"question_id": 5, "question": "Is there a cat?", "img_path": "download/pope/val_images/x.jpg",
                  "answer": "no", "split": "popular", "split_question_id": 2}}  # fmt: skip
    (tmp_path / "datasets" / "pope").mkdir()
    (tmp_path / "datasets" / "pope" / "metadata-slim-512.json").write_text(json.dumps(pope))
    (example,) = get_task("pope").load(tmp_path, "test")
    assert (example.id, example.subset, example.target["label"]) == ("popular/2", "popular", "no")

    text = {"3": {"question_id": 3, "question": "what is it?\nReference OCR token: a, b\nAnswer the question using "
                  "a single word or phrase.", "img_path": "download/text-vqa/train_val_images/i.jpg",
                  "answers": ["a"] * 10}}  # fmt: skip
    (tmp_path / "datasets" / "text-vqa").mkdir()
    (tmp_path / "datasets" / "text-vqa" / "metadata.json").write_text(json.dumps(text))
    (ocr,) = get_task("textvqa-ocr").load(tmp_path, "test")
    (pure,) = get_task("textvqa-pure").load(tmp_path, "test")
    assert ocr.prompt.startswith("what is it?\nReference OCR token: a, b\nAnswer")
    assert pure.prompt == "what is it?\nAnswer the question using a single word or phrase."

    answers = [[{"answer": "unanswerable", "answer_confidence": "yes"}] * 10]  # vlm-evaluation nests the list
    image = "download/vizwiz/val_images/VizWiz_val_1.jpg"
    vizwiz = {"0": {"question_id": 0, "question": "What?", "img_path": image, "answers": answers, "answerable": 0}}
    (tmp_path / "datasets" / "vizwiz").mkdir()
    (tmp_path / "datasets" / "vizwiz" / "metadata.json").write_text(json.dumps(vizwiz))
    (example,) = get_task("vizwiz").load(tmp_path, "test")
    assert (example.id, example.target["answerable"], example.target["canonical"]) == (
        "VizWiz_val_1",
        False,
        "unanswerable",
    )


def test_vlm_eval_image_paths_stay_under_the_root(tmp_path: Path) -> None:
    index = {"1": {"question_id": 1, "question": "q", "img_path": "../../etc/passwd", "answer": "a"}}
    (tmp_path / "datasets" / "gqa").mkdir(parents=True)
    (tmp_path / "datasets" / "gqa" / "metadata-full.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"metadata-full\.json record 1 field 'img_path'.*escapes"):
        get_task("gqa").load(tmp_path, "test")


class ColorModel:
    """Says yes when the image's top-left pixel is red-dominated (colors 1 and 2 differ there)."""

    image_transform = None

    def generate(self, images, prompts, *, max_new_tokens=128, blind=False):  # type: ignore[no-untyped-def]
        return ["Yes" if im.getpixel((0, 0))[0] > 15 and not blind else "No" for im in images]

    def first_token_probs(self, images, prompts, candidates, *, blind=False):  # type: ignore[no-untyped-def]
        return [
            {"Yes": 0.9, "No": 0.1} if t == "Yes" else {"Yes": 0.2, "No": 0.8}
            for t in self.generate(images, prompts, blind=blind)
        ]


def test_evaluation_runs_on_parquet_images(tmp_path: Path) -> None:
    from ssmvlm.eval.runner import evaluate_model

    rows = [
        {**pope_row("1", "adversarial", "yes"), "image": png(color(2))},  # red channel 20: "Yes", right
        {**pope_row("2", "adversarial", "no"), "image": png(color(1))},  # red channel 10: "No", right
        {**pope_row("1", "random", "no"), "image": png(color(3))},  # "Yes", wrong
    ]
    write(tmp_path / "POPE" / "data" / "test-00000-of-00001.parquet", rows, POPE_SCHEMA, row_group_size=1)
    results = evaluate_model(
        ColorModel(), ["pope"], {"pope": tmp_path / "POPE"}, out_dir=tmp_path / "out", batch_size=2, show_progress=False
    )
    assert results["tasks"]["pope"]["n"] == 3
    assert results["tasks"]["pope"]["score"] == pytest.approx(200 / 3)
    assert results["controls"]["blind"]["tasks"]["pope"]["score"] == pytest.approx(200 / 3)  # always "No"
