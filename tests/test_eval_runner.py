"""The runner on the ShapeScenes fixture with a deterministic fake model: scores, controls, files, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ssmvlm.data.transforms import build_image_transform
from ssmvlm.eval import EvalModel, evaluate_model
from ssmvlm.eval.runner import select_examples
from ssmvlm.eval.tasks import get_task
from ssmvlm.utils.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
SHAPES = FIXTURES / "shapes"
TASKS = ["shapes-vqa", "shapes-pope", "shapes-refexp"]
REFER = 'Please provide the bounding box coordinate of the region this sentence describes: "{}"'
VQA = "{}\nAnswer the question using a single word or phrase."

# (prompt, image size) -> answer: right for some examples, wrong or empty for others (hand-computed below)
ANSWERS = {
    (VQA.format("What color is the circle?"), (40, 30)): "Red.",  # 1
    (VQA.format("How many shapes are there?"), (40, 30)): "two",  # 1
    (VQA.format("Is there a square?"), (32, 32)): "no",  # 0
    (VQA.format("How many shapes are there?"), (30, 40)): "",  # 0 (empty output)
    (VQA.format("Is there a circle in the image?"), (40, 30)): "Yes, there is.",  # right
    (VQA.format("Is there a triangle in the image?"), (32, 32)): "Yes",  # wrong from text
    (REFER.format("red circle"), (40, 30)): "[0.1, 0.2, 0.4, 0.6]",  # exact raw box
    (REFER.format("the circle on the left"), (40, 30)): "The box is [0.1, 0.2, 0.4, 0.6].",  # lenient only
    (REFER.format("blue square"), (30, 40)): "[0.375, 0.5, 0.625, 0.75]",  # exact in the letterboxed frame
}
PROBS = {"Is there a circle": {"Yes": 0.8, "No": 0.2}, "Is there a triangle": {"Yes": 0.3, "No": 0.7}}


class FakeModel:
    """Answers from a table (garbage when blind); counts what it is asked; can fail on demand."""

    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.image_transform = build_image_transform("letterbox", 32)
        self.asked: list[str] = []
        self.fail_after_calls = fail_after_calls
        self.calls = 0

    def _tick(self, prompts: list[str]) -> None:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.asked.extend(prompts)

    def generate(
        self, images: list[Image.Image], prompts: list[str], *, max_new_tokens: int = 128, blind: bool = False
    ) -> list[str]:
        self._tick(prompts)
        if blind:
            return ["yes"] * len(prompts)
        return [ANSWERS.get((p, im.size), "no idea") for im, p in zip(images, prompts, strict=True)]

    def first_token_probs(
        self, images: list[Image.Image], prompts: list[str], candidates: list[str], *, blind: bool = False
    ) -> list[dict[str, float]]:
        assert candidates == ["Yes", "No"]
        if blind:
            return [{"Yes": 0.6, "No": 0.4} for _ in prompts]
        return [next(v for k, v in PROBS.items() if p.startswith(k)) for p in prompts]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval")
    results = evaluate_model(
        FakeModel(), TASKS, SHAPES, split="test", out_dir=out, batch_size=2, show_progress=False
    )
    return results, out


def test_fake_model_follows_the_protocol() -> None:
    assert isinstance(FakeModel(), EvalModel)


def test_model_scores_are_hand_computed(evaluated: tuple[dict, Path]) -> None:
    results, _ = evaluated
    vqa = results["tasks"]["shapes-vqa"]
    assert vqa["n"] == 4 and vqa["score"] == pytest.approx(50.0)
    assert {k: v["score"] for k, v in vqa["breakdown"].items()} == pytest.approx(
        {"attribute": 100.0, "count": 50.0, "exist": 0.0}
    )
    assert vqa["ci95"][0] <= 50.0 <= vqa["ci95"][1]

    pope = results["tasks"]["shapes-pope"]
    assert pope["score"] == pytest.approx(100.0)  # from the first-token probabilities
    text = pope["metrics"]["text"]["all"]
    assert text == pytest.approx(
        {"accuracy": 50.0, "precision": 50.0, "recall": 100.0, "f1": 200 / 3, "yes_ratio": 100.0}
    )
    assert pope["metrics"]["prob"]["split_mean_accuracy"] == pytest.approx(100.0)

    refexp = results["tasks"]["shapes-refexp"]
    metrics = refexp["metrics"]
    assert refexp["score"] == pytest.approx(200 / 3)  # raw frame, strict parsing: the lenient-only one fails
    assert metrics["acc_raw"] == pytest.approx(200 / 3)
    assert metrics["acc_raw_lenient"] == pytest.approx(100.0)
    assert metrics["invalid_strict"] == pytest.approx(100 / 3)
    assert metrics["acc_model"] == pytest.approx(200 / 3)  # letterboxed-frame IoUs: 0.75 and 1.0

    aggregates = results["aggregates"]
    assert aggregates["vqa"]["weighted"] == pytest.approx((4 * 50 + 6 * 100) / 10)
    assert aggregates["vqa"]["macro"] == pytest.approx(75.0)
    assert aggregates["loc"]["weighted"] == pytest.approx(200 / 3)
    assert aggregates["overall"]["weighted"] == pytest.approx((200 + 600 + 200) / 13)
    assert aggregates["overall"]["n"] == 13


def test_controls_are_hand_computed(evaluated: tuple[dict, Path]) -> None:
    results, _ = evaluated
    blind, prior = results["controls"]["blind"], results["controls"]["prior"]
    assert blind["tasks"]["shapes-vqa"]["score"] == pytest.approx(25.0)  # "yes" is right once
    assert blind["tasks"]["shapes-pope"]["score"] == pytest.approx(50.0)
    assert blind["tasks"]["shapes-refexp"]["score"] == 0.0
    # prior fitted on the train split: count -> "2", attribute -> "blue", exist -> "no"
    assert prior["fit_on"] == dict.fromkeys(TASKS, "train")
    assert prior["tasks"]["shapes-vqa"]["score"] == pytest.approx(25.0)
    assert prior["tasks"]["shapes-pope"]["score"] == pytest.approx(50.0)  # yes/no tie -> "No"
    assert prior["tasks"]["shapes-refexp"]["score"] == 0.0


def test_files_written(evaluated: tuple[dict, Path]) -> None:
    results, out = evaluated
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 13
    assert set(records[0]) >= {"task", "id", "prompt", "raw_output", "answer", "score"}
    assert {(r["task"], r["id"]) for r in records} == {(r["task"], r["id"]) for r in records[::-1]}
    for control in ("blind", "prior"):
        assert len((out / "controls" / control / "predictions.jsonl").read_text().splitlines()) == 13
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    table = (out / "results.md").read_text()
    for needle in (
        "Weighted VQA",
        "Weighted Loc",
        "Weighted Overall",
        "shapes-refexp",
        "blind",
        "prior",
        "[",
    ):
        assert needle in table
    assert json.loads((out / "run.json").read_text())["seed"] == 0


def test_resume_does_not_recompute(tmp_path: Path, evaluated: tuple[dict, Path]) -> None:
    reference, _ = evaluated
    interrupted = FakeModel(fail_after_calls=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(interrupted, TASKS, SHAPES, out_dir=tmp_path, batch_size=2, show_progress=False)
    finished = len((tmp_path / "predictions.jsonl").read_text().splitlines())
    assert finished == len(interrupted.asked) == 6  # 3 batches of 2 were written before the interruption
    resumed = FakeModel()
    results = evaluate_model(resumed, TASKS, SHAPES, out_dir=tmp_path, batch_size=2, show_progress=False)
    # generate is asked only about the 7 missing examples, then the blind control runs all 13
    assert len(resumed.asked) == 7 + 13
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 13
    assert results["tasks"] == reference["tasks"]
    assert results["aggregates"] == reference["aggregates"]
    again = FakeModel()
    evaluate_model(again, TASKS, SHAPES, out_dir=tmp_path, batch_size=2, show_progress=False)
    assert again.asked == []


def test_bad_prediction_files(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"task": "shapes-vqa", "id": "999", "raw_output": "x"}) + "\n")
    with pytest.raises(DataError, match=r"predictions.jsonl record line 1: id '999' is not an example"):
        evaluate_model(
            FakeModel(), ["shapes-vqa"], SHAPES, out_dir=tmp_path, controls=False, show_progress=False
        )
    record = {"task": "shapes-vqa", "id": "100", "raw_output": "red"}
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match="record line 2: duplicate prediction"):
        evaluate_model(
            FakeModel(), ["shapes-vqa"], SHAPES, out_dir=tmp_path, controls=False, show_progress=False
        )
    path.write_bytes(b'{"task": "shapes-vqa", "id": "100", "raw_output": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        evaluate_model(
            FakeModel(), ["shapes-vqa"], SHAPES, out_dir=tmp_path, controls=False, show_progress=False
        )


def test_missing_image_names_file_and_example(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    shutil.copytree(SHAPES, data)
    (data / "images" / "test" / "000001.png").unlink()
    with pytest.raises(DataError, match=r"000001.png record shapes-vqa 102: image file not found"):
        evaluate_model(
            FakeModel(), ["shapes-vqa"], data, out_dir=tmp_path / "out", controls=False, show_progress=False
        )


def test_limit_subsamples_deterministically(tmp_path: Path) -> None:
    examples = get_task("shapes-pope").load(SHAPES, "test")
    first = select_examples(examples, 3, seed=1, task_name="shapes-pope")
    assert len(first) == 3 and first == select_examples(examples, 3, seed=1, task_name="shapes-pope")
    assert [e.id for e in first] == [e.id for e in examples if e in first]  # original order kept
    assert select_examples(examples, 100, seed=1, task_name="shapes-pope") == examples
    results = evaluate_model(
        FakeModel(), ["shapes-pope"], SHAPES, out_dir=tmp_path, limit=2, controls=False, show_progress=False
    )
    assert results["tasks"]["shapes-pope"]["n"] == 2
    assert "controls" not in results


def test_markdown_lists_family_breakdown(evaluated: tuple[dict, Path]) -> None:
    _, out = evaluated
    table = (out / "results.md").read_text()
    assert "shapes-vqa: count | 2 | 50.00 | 0.00 | 50.00 |" in table  # model, blind ("yes"), prior ("2")


def test_task_groups_expand() -> None:
    from ssmvlm.eval.tasks import expand_task_names

    assert expand_task_names(["shapes"]) == TASKS
    assert expand_task_names(["shapes-pope", "shapes"]) == ["shapes-pope", "shapes-vqa", "shapes-refexp"]
    assert len(expand_task_names(["suite"])) == 11


def test_model_returning_a_wrong_batch_is_a_clear_error(tmp_path: Path) -> None:
    class ShortModel(FakeModel):
        def generate(self, images, prompts, *, max_new_tokens=128, blind=False):  # type: ignore[override]
            return ["red"]

    with pytest.raises(DataError, match=r"model\.generate: returned 1 results for a batch of 2"):
        evaluate_model(
            ShortModel(),
            ["shapes-vqa"],
            SHAPES,
            out_dir=tmp_path,
            batch_size=2,
            controls=False,
            show_progress=False,
        )


def test_cli_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import ssmvlm.vlm
    from ssmvlm.cli import app

    loaded: list[tuple[str, str | None]] = []

    def fake_load_vlm(run_dir: str | Path, device: str | None = None) -> FakeModel:
        loaded.append((str(run_dir), device))
        return FakeModel()

    monkeypatch.setattr(ssmvlm.vlm, "load_vlm", fake_load_vlm)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--run",
            str(tmp_path / "run"),
            "--tasks",
            "shapes",
            "--data",
            str(SHAPES),
            "--out",
            str(out),
            "--batch-size",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert loaded == [(str(tmp_path / "run"), None)]
    assert "**Weighted Overall** | 13 | **76.92" in result.output
    assert (out / "results.json").is_file() and (out / "run.json").is_file()
    assert json.loads((out / "run.json").read_text())["config"]["run_dir"] == str(tmp_path / "run")


def test_resume_after_a_half_written_record(tmp_path: Path, evaluated: tuple[dict, Path]) -> None:
    reference, out = evaluated
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "predictions.jsonl").write_text("".join(lines[:5]) + lines[5][:20])  # crash mid-record
    model = FakeModel()
    results = evaluate_model(model, TASKS, SHAPES, out_dir=tmp_path, controls=False, show_progress=False)
    assert len(model.asked) == 13 - 5
    assert results["tasks"] == reference["tasks"]


def test_boxes_are_scored_in_the_frame_the_model_answers_in(tmp_path: Path, evaluated: tuple[dict, Path]) -> None:
    model = FakeModel()
    model.box_frame = "model"  # trained with model.box_frame=model
    kwargs = {"split": "test", "batch_size": 2, "controls": False, "show_progress": False}
    results = evaluate_model(model, ["shapes-refexp"], SHAPES, out_dir=tmp_path / "a", **kwargs)
    assert results["config"]["box_convention"] == "model"
    assert evaluated[0]["config"]["box_convention"] == "raw"  # a model that does not say answers in raw
    forced = evaluate_model(model, ["shapes-refexp"], SHAPES, out_dir=tmp_path / "b", box_convention="raw", **kwargs)
    assert forced["config"]["box_convention"] == "raw"
