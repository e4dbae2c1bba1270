"""Batch prediction (`ssmvlm predict`) and multi-turn chat on a tiny trained run, on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_train_data import COLORS, SHAPES, make_mini_llava
from typer.testing import CliRunner

from ssmvlm.cli import app
from ssmvlm.config import load_config
from ssmvlm.eval.predict import predict_records, read_records
from ssmvlm.train import TrainConfig, train_vlm
from ssmvlm.train.dataset import tokenize_conversation
from ssmvlm.utils.errors import DataError
from ssmvlm.vlm import load_vlm
from ssmvlm.vlm.conversation import Conversation, continuation_logprob, turn_ids

TINY = [
    "model.backbone=vit_nano",
    "model.image_size=48",
    "recipe=shapes",
    "optim.global_batch_size=4",
    "optim.per_device_batch_size=4",
    "optim.max_steps=2",
    "logging.checkpoint_every=1000",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, data folder with images/): a two-step run; only the plumbing is under test."""
    data = make_mini_llava(tmp_path_factory.mktemp("data"), 8, size=48)
    config = load_config(TrainConfig, None, [*TINY, f"data.train_json={data}"])
    return train_vlm(config, tmp_path_factory.mktemp("run"), show_progress=False), data.parent


@pytest.fixture(scope="module")
def vlm(tiny_run: tuple[Path, Path]):
    return load_vlm(tiny_run[0], device="cpu")


class CountingModel:
    """Answers with the prompt reversed; counts the prompts it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def generate(self, images, prompts, *, max_new_tokens):  # type: ignore[no-untyped-def]
        self.asked += prompts
        return [f"{p[::-1]}|{None if im is None else im.size}" for im, p in zip(images, prompts, strict=True)]


def write_input(folder: Path, records: list[dict]) -> Path:
    path = folder / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_predict_writes_each_record_and_resumes_without_recomputing(tmp_path: Path) -> None:
    Image.new("RGB", (10, 7)).save(tmp_path / "a.png")
    records = [{"image": "a.png", "prompt": f"question {k}"} for k in range(5)]
    records.append({"id": "text", "image": None, "prompt": "no image"})
    source = write_input(tmp_path, records)
    out = tmp_path / "preds.jsonl"
    first = CountingModel()
    summary = predict_records(first, read_records(source)[:3], source, out, batch_size=2, show_progress=False)
    assert summary["predicted"] == 3 and first.asked == ["question 0", "question 1", "question 2"]
    # a crash mid-line leaves a cut record; the rerun drops it and only asks for what is missing
    with out.open("a") as handle:
        handle.write('{"id": "4", "ima')
    second = CountingModel()
    summary = predict_records(second, read_records(source), source, out, batch_size=2, show_progress=False)
    assert second.asked == ["question 3", "question 4", "no image"]
    assert (summary["already_done"], summary["predicted"]) == (3, 3)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["1", "2", "3", "4", "5", "text"]
    assert lines[0] == {"id": "1", "image": "a.png", "prompt": "question 0", "prediction": "0 noitseuq|(10, 7)"}
    assert lines[-1]["prediction"] == "egami on|None"


def test_predict_refuses_a_changed_input(tmp_path: Path) -> None:
    source = write_input(tmp_path, [{"prompt": "one"}])
    out = tmp_path / "preds.jsonl"
    predict_records(CountingModel(), read_records(source), source, out, show_progress=False)
    source = write_input(tmp_path, [{"prompt": "another"}])
    with pytest.raises(DataError, match=r"preds\.jsonl record line 1: id '1' was predicted for another prompt"):
        predict_records(CountingModel(), read_records(source), source, out, show_progress=False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image": "missing.png", "prompt": "q"}', r"line 1 field 'image': image file .*missing\.png not found"),
        ('{"image": "a.png"}', r"record line 1 field 'prompt': expected a non-empty string"),
        ('{"image": 3, "prompt": "q"}', r"record line 1 field 'image': expected an image path or null"),
        ('{"prompt": "q"', r"record line 1: malformed JSON"),
        ('["q"]', r"record line 1: expected an object, got list"),
    ],
)
def test_bad_records_are_one_line_errors(tmp_path: Path, line: str, message: str) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "records.jsonl").write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        read_records(tmp_path / "records.jsonl")


def test_predict_cli_on_a_trained_run(tmp_path: Path, tiny_run: tuple[Path, Path], vlm) -> None:
    run, data = tiny_run
    image = data / "images" / "0001.png"
    source = write_input(tmp_path, [{"id": "x", "image": str(image), "prompt": "What color is the shape?"}])
    out = tmp_path / "preds.jsonl"
    args = ["predict", "--run", str(run), "--input", str(source), "--out", str(out), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    expected = vlm.generate([Image.open(image).convert("RGB")], ["What color is the shape?"], max_new_tokens=3)[0]
    assert json.loads(out.read_text())["prediction"] == expected
    assert "1 predicted, 0 already" in result.output
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert "0 predicted, 1 already" in result.output and len(out.read_text().splitlines()) == 1
    bad = write_input(tmp_path, [{"image": "nope.png", "prompt": "q"}])
    result = CliRunner().invoke(app, ["predict", "--run", str(run), "--input", str(bad), "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, DataError)


def test_conversation_reads_what_training_tokenizes_and_encodes_the_image_once(vlm, tiny_run, monkeypatch) -> None:
    image = Image.open(tiny_run[1] / "images" / "0002.png").convert("RGB")
    calls = []
    encode = vlm.encode_images
    monkeypatch.setattr(vlm, "encode_images", lambda pixels: calls.append(1) or encode(pixels))
    conversation = Conversation(vlm, image)
    first = conversation.ask("What color is the shape?", max_new_tokens=4)
    assert first == vlm.generate([image], ["What color is the shape?"], max_new_tokens=4)[0]
    turns = [("human", "What color is the shape?"), ("gpt", first), ("human", "And the shape?")]
    expected, _ = tokenize_conversation(turns, vlm.tokenizer, vlm.prompt_format, 10_000, True)
    assert conversation.prompt_ids("And the shape?") == expected
    conversation.ask("And the shape?", max_new_tokens=4)
    assert len(conversation.turns) == 4 and len(calls) == 2  # the Conversation's own call and generate's above


def test_chat_repl_keeps_the_conversation(tiny_run: tuple[Path, Path], vlm) -> None:
    run, data = tiny_run
    image = data / "images" / "0003.png"
    questions = ["What color is the shape?", "Which shape is shown?"]
    result = CliRunner().invoke(
        app,
        ["chat", "--run", str(run), "--image", str(image), "--max-new-tokens", "4"],
        input="\n".join([questions[0], "", questions[1], "/reset", questions[1], "/exit", "never asked"]) + "\n",
    )
    assert result.exit_code == 0, result.output
    picture = Image.open(image).convert("RGB")
    conversation = Conversation(vlm, picture)
    expected = [conversation.ask(q, max_new_tokens=4) for q in questions]
    expected.append(Conversation(vlm, picture).ask(questions[1], max_new_tokens=4))  # after /reset: a fresh start
    assert result.output.splitlines() == expected


def test_chat_repl_without_an_image(tiny_run: tuple[Path, Path], vlm) -> None:
    result = CliRunner().invoke(app, ["chat", "--run", str(tiny_run[0]), "--max-new-tokens", "3"], input="Hello?")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [vlm.generate([None], ["Hello?"], max_new_tokens=3)[0]]


def test_continuation_logprob_matches_the_first_token_probability(vlm, tiny_run) -> None:
    image = Image.open(tiny_run[1] / "images" / "0004.png").convert("RGB")
    question = "Which shape is shown?"
    # two answers that are one token each in the run's small trained vocabulary
    single = [w for w in (*COLORS, *SHAPES) if len(vlm.tokenizer(w, add_special_tokens=False).input_ids) == 1]
    first, second = single[:2]
    logprob, greedy = continuation_logprob(vlm, image, question, f" {first}")  # the space is stripped
    logprob_2, greedy_2 = continuation_logprob(vlm, image, question, second)
    probs = vlm.first_token_probs([image], [question], [first, second])[0]
    # renormalized over the two candidates, the single-token log-probabilities give first_token_probs back
    ratio = torch.softmax(torch.tensor([logprob, logprob_2]), dim=0)
    assert ratio.tolist() == pytest.approx([probs[first], probs[second]], abs=1e-5)
    assert logprob < 0 and not (greedy and greedy_2)
    answer = vlm.generate([image], [question], max_new_tokens=3)[0]
    if answer:  # what greedy decoding produced is greedy by definition
        assert continuation_logprob(vlm, image, question, answer)[1]
    assert turn_ids(vlm, [("human", question)]) == vlm.tokenizer(vlm.prompt_format.inference_prompt(question)).input_ids
