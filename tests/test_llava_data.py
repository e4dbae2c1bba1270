"""The LLaVA reader and image opener: good records load, each kind of bad input gives its one-line error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from ssmvlm.cli import app
from ssmvlm.data.images import open_image
from ssmvlm.data.llava import LlavaLoadReport, load_llava_records
from ssmvlm.utils.errors import DataError


def _good(record_id: str = "r0", answer: str = "[0.10, 0.20, 0.50, 0.60]") -> dict[str, Any]:
    return {
        "id": record_id,
        "image": "images/a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhere is the red star?"},
            {"from": "gpt", "value": answer},
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": "red"},
        ],
    }


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (12, 8), (10, 20, 30)).save(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "outside.png").write_bytes(b"")
    return tmp_path


def _write(root: Path, data: Any) -> Path:
    path = root / "data.json"
    path.write_text(json.dumps(data))
    return path


def test_good_records_load(root: Path) -> None:
    text_only = {
        "id": 7,
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "[1, 2, 3, 4]"}],
    }
    records = load_llava_records(_write(root, [_good(), text_only]))
    assert records[0].id == "r0" and records[0].image == root / "images" / "a.png"
    assert records[0].turns == [
        ("human", "Where is the red star?"),
        ("gpt", "[0.10, 0.20, 0.50, 0.60]"),
        ("human", "What colour is it?"),
        ("gpt", "red"),
    ]
    # Text-only records carry no image and their answers are not read as boxes.
    assert records[1].id == "7" and records[1].image is None
    assert open_image(records[0].image).size == (12, 8)


def _mutate(change: Any) -> dict[str, Any]:
    record = _good("bad1")
    change(record)
    return record


BAD_RECORDS = {
    "missing id": (lambda r: r.pop("id"), r"record 1 field 'id': missing"),
    "id wrong type": (lambda r: r.update(id=[1]), r"record 1 field 'id': expected a string or integer"),
    "missing conversations": (lambda r: r.pop("conversations"), r"field 'conversations': missing"),
    "conversations not a list": (
        lambda r: r.update(conversations="hi"),
        r"field 'conversations': expected a non-empty",
    ),
    "missing from": (
        lambda r: r["conversations"][1].pop("from"),
        r"field 'conversations\[1\]\.from': missing",
    ),
    "value wrong type": (
        lambda r: r["conversations"][0].update(value=3),
        r"'conversations\[0\]\.value': expected a string",
    ),
    "roles not alternating": (
        lambda r: r["conversations"][2].update({"from": "gpt"}),
        r"'conversations\[2\]\.from': role 'gpt'.*expected 'human'",
    ),
    "odd turn count": (lambda r: r["conversations"].pop(), r"field 'conversations': 3 turns"),
    "escaping path": (
        lambda r: r.update(image="../outside.png"),
        r"field 'image': image path '\.\./outside\.png' escapes",
    ),
    "absolute path": (
        lambda r: r.update(image="/etc/hostname"),
        r"field 'image': image path '/etc/hostname' escapes",
    ),
    "missing image": (
        lambda r: r.update(image="images/none.png"),
        r"field 'image': image file .*none\.png' not found",
    ),
    "box outside": (
        lambda r: r["conversations"][1].update(value="[0.1, 0.2, 1.3, 0.6]"),
        r"'conversations\[1\]\.value': box \[0\.1, 0\.2, 1\.3, 0\.6\] outside \[0, 1\]",
    ),
    "box reversed": (
        lambda r: r["conversations"][1].update(value="It is at [0.6, 0.2, 0.5, 0.6]."),
        r"'conversations\[1\]\.value': box \[0\.6, 0\.2, 0\.5, 0\.6\] has x2 < x1",
    ),
    "placeholder without image": (
        lambda r: r.pop("image"),
        r"'conversations\[0\]\.value': <image> placeholder",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_each_bad_record_gives_one_line_error(root: Path, case: str) -> None:
    change, pattern = BAD_RECORDS[case]
    path = _write(root, [_good(), _mutate(change)])
    with pytest.raises(DataError) as info:
        load_llava_records(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert "(id 'bad1')" in message or "id" in case
    assert __import__("re").search(pattern, message), message


def test_malformed_json_and_wrong_top_level(root: Path) -> None:
    path = root / "broken.json"
    path.write_text('[{"id": "a", ')
    with pytest.raises(DataError, match=r"broken\.json: malformed JSON at line 1"):
        load_llava_records(path, skip_bad=True)  # a broken file cannot be skipped record by record
    with pytest.raises(DataError, match="expected a JSON list"):
        load_llava_records(_write(root, {"id": "a"}))


def test_skip_bad_counts_and_warns_once(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = [
        _good("ok1"),
        _mutate(lambda r: r.update(image="../outside.png")),
        "not a record",
        _good("ok2"),
        _mutate(lambda r: r["conversations"][1].update(value="[2, 0, 3, 1]")),
    ]
    report = LlavaLoadReport()
    records = load_llava_records(_write(root, data), skip_bad=True, report=report)
    assert [r.id for r in records] == ["ok1", "ok2"]
    assert (report.total, report.skipped) == (5, 3)
    assert "escapes the data root" in (report.first_reason or "")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "skipped 3 of 5" in warnings[0] and "escapes" in warnings[0]


def test_skip_bad_warning_keeps_brackets(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _mutate(lambda r: r["conversations"][1].update(value="[0.5, 0.2, 0.1, 0.6]"))
    load_llava_records(_write(root, [bad]), skip_bad=True)
    warning = capsys.readouterr().err
    # Field names and boxes in the reason are printed as written, not taken for rich markup.
    assert "conversations[1].value" in warning and "[0.5, 0.2, 0.1, 0.6]" in warning


def test_open_image_errors(root: Path) -> None:
    assert open_image("images/a.png", root).mode == "RGB"
    cases = {
        "images/none.png": "not found",
        "images/corrupt.png": "cannot decode image",
        "../outside.png": "escapes",
        str(root / "images" / "a.png"): "escapes",
        "images/../../outside.png": "escapes",
    }
    for path, reason in cases.items():
        with pytest.raises(DataError, match=reason) as info:
            open_image(path, root)
        assert "\n" not in str(info.value)
    assert open_image("images/../images/a.png", root).size == (12, 8)  # climbing back inside the root is fine


def test_validate_cli(root: Path) -> None:
    path = _write(root, [_good(), _mutate(lambda r: r.update(image="../outside.png"))])
    runner = CliRunner()
    failed = runner.invoke(app, ["data", "validate", str(path)])
    assert failed.exit_code != 0 and isinstance(failed.exception, DataError)
    result = runner.invoke(app, ["data", "validate", str(path), "--skip-bad", "--image-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "records" in result.output


def test_answers_in_model_frame_move_only_the_boxes(root: Path) -> None:
    from ssmvlm.data.box_frames import answers_in_model_frame
    from ssmvlm.data.transforms import build_image_transform

    text_only = {"id": 7, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "[0, 0, 1, 1]"}]}
    records = load_llava_records(_write(root, [_good(), text_only]))
    # The 12 x 8 image letterboxed into 12 x 12 gains 2 rows above and below: y -> (8 y + 2) / 12.
    letterboxed = answers_in_model_frame(records, build_image_transform("letterbox", 12))
    assert letterboxed[0].turns == [
        ("human", "Where is the red star?"),
        ("gpt", "[0.10, 0.30, 0.50, 0.57]"),
        ("human", "What colour is it?"),
        ("gpt", "red"),
    ]
    assert letterboxed[1].turns == records[1].turns  # no image, so no frame to move into
    # A plain resize keeps normalized coordinates; so does a model frame of the image's own shape.
    assert answers_in_model_frame(records, build_image_transform("resize-naive", 24))[0].turns == records[0].turns
    assert answers_in_model_frame(records, build_image_transform("letterbox", (8, 12)))[0].turns == records[0].turns


def test_answers_in_model_frame_agree_with_the_scored_ground_truth(tmp_path: Path) -> None:
    """A training label moved into the model frame is the box the evaluation's "model" convention scores against."""
    from ssmvlm.data.box_frames import answers_in_model_frame
    from ssmvlm.data.shapes import generate_shapescenes
    from ssmvlm.data.transforms import build_image_transform
    from ssmvlm.eval.metrics import parse_box
    from ssmvlm.eval.tasks import get_task
    from ssmvlm.eval.tasks.boxes import ground_truth

    generate_shapescenes(tmp_path, size=30, image_size=40, seed=3, show_progress=False, non_square_share=1.0)
    transform = build_image_transform("letterbox", 40)
    examples = get_task("shapes-refexp").load(tmp_path, "test")
    records = load_llava_records(tmp_path / "test" / "llava.json")
    moved = {
        (record.image, question): answer
        for record in answers_in_model_frame(records, transform)
        for (_, question), (_, answer) in zip(record.turns[::2], record.turns[1::2], strict=True)
    }
    checked = 0
    for example in examples:
        answer = moved.get((example.image, example.prompt))
        if answer is not None:
            # Two roundings apart: the raw label's and the moved label's, each at most 0.005 (the scale is <= 1).
            assert parse_box(answer) == pytest.approx(ground_truth(example.target, "model", transform), abs=0.0101)
            checked += 1
    assert checked >= 3
