"""Training on CPU: a tiny end-to-end run, frozen encoder, kill-and-resume identity, faults, the CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from test_train_data import make_mini_llava
from typer.testing import CliRunner

import ssmvlm.train.loop as loop
from ssmvlm.config import load_config
from ssmvlm.train import TrainConfig, train_vlm
from ssmvlm.utils.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from ssmvlm.vlm import load_vlm
from ssmvlm.vlm.builder import load_trained_weights

BASE = [
    "model.backbone=vit_nano",
    "model.image_size=48",
    "recipe=shapes",
    "optim.global_batch_size=8",
    "optim.per_device_batch_size=4",
    "logging.log_every=1",
]


def make_config(data: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, [*BASE, f"data.train_json={data}", *extra])


@pytest.fixture(scope="module")
def data_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mini_llava(tmp_path_factory.mktemp("data"), 14, size=48, text_only=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_json: Path):
    """One short run; captures the VLM that trained so the frozen encoder can be inspected."""
    captured = {}
    build = loop.build_vlm

    def capture(*args, **kwargs):
        vlm = build(*args, **kwargs)
        captured["vlm"] = vlm
        captured["encoder_before"] = {k: v.clone() for k, v in vlm.vision_backbone.state_dict().items()}
        return vlm

    mp = pytest.MonkeyPatch()
    mp.setattr(loop, "build_vlm", capture)
    run = train_vlm(
        make_config(data_json, "optim.max_steps=24", "logging.checkpoint_every=1000"),
        tmp_path_factory.mktemp("run"),
        show_progress=False,
    )
    mp.undo()
    return run, captured


def test_end_to_end_loss_falls(trained) -> None:
    run, _ = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 25))
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in records)
    for name in ("config.json", "run.json", "model.safetensors", "tokenizer/tokenizer.json"):
        assert (run / name).is_file(), name


def test_extra_json_records_join_the_training_set(tmp_path: Path, data_json: Path) -> None:
    """A training mix: a second LLaVA file, its images relative to its own folder, joins every epoch."""
    extra = make_mini_llava(tmp_path / "extra", 12, size=40)
    config = make_config(data_json, f"data.extra_json=[{extra}]", "optim.epochs=6", "logging.checkpoint_every=1000")
    run = train_vlm(config, tmp_path / "run", show_progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6 * 4  # (14 + 2 text-only + 12) samples at batch 8: 4 steps an epoch, not 2
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    with pytest.raises(DataError, match=r"missing\.json"):
        train_vlm(make_config(data_json, f"data.extra_json=[{tmp_path}/missing.json]"), tmp_path / "bad")


@pytest.mark.parametrize(("reduction", "power"), [("sample", 1.0), ("sqrt", 0.5)])
def test_length_weighted_loss_reductions_learn(
    tmp_path: Path, data_json: Path, monkeypatch: pytest.MonkeyPatch, reduction: str, power: float
) -> None:
    import ssmvlm.vlm.model as model_module

    powers = []
    reference = model_module.length_weighted_loss
    monkeypatch.setattr(
        model_module, "length_weighted_loss", lambda *args: powers.append(args[2]) or reference(*args)
    )
    overrides = [f"optim.loss_reduction={reduction}", "optim.max_steps=24", "logging.checkpoint_every=1000"]
    run = train_vlm(make_config(data_json, *overrides), tmp_path / "run", show_progress=False)
    assert powers == [power] * 24 * 2  # every micro-batch of every step (batch 8 in micro-batches of 4)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    assert json.loads((run / "run.json").read_text())["recipe"]["loss_reduction"] == reduction


def test_compile_all_trains_as_eager_does(tmp_path: Path, data_json: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``distributed.llm_kernels=compile-all`` reaches the loop: the VLM's forward is compiled (captured by dynamo
    and run as captured here; Inductor's kernels are a card's business) and the run logs the eager run's losses,
    text-only rows in the batches included."""
    import torch._dynamo

    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager", **kw))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    losses = {}
    for kernels in ("eager", "compile-all"):
        overrides = ["optim.max_steps=4", "logging.checkpoint_every=1000", f"distributed.llm_kernels={kernels}"]
        run = train_vlm(make_config(data_json, *overrides), tmp_path / kernels, show_progress=False)
        losses[kernels] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert losses["compile-all"] == pytest.approx(losses["eager"], rel=1e-5)


def test_encoder_is_frozen(trained) -> None:
    _, captured = trained
    encoder = captured["vlm"].vision_backbone
    assert not encoder.training
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    after = encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in captured["encoder_before"].items())
    saved = load_file(run_weights := trained[0] / "model.safetensors")
    assert saved and not any(k.startswith("vision_backbone.") for k in saved), run_weights
    assert any(k.startswith("llm.") for k in saved) and any(k.startswith("connector.") for k in saved)


def test_generate_with_cache_equals_without_and_batched_equals_single(trained, data_json: Path) -> None:
    vlm = load_vlm(trained[0], device="cpu")
    records = json.loads(data_json.read_text())[:4]
    images = [Image.open(data_json.parent / r["image"]) for r in records]
    prompts = [r["conversations"][0]["value"].replace("<image>\n", "") for r in records]
    # min_new_tokens keeps a barely trained model from stopping at once, so the comparison has substance.
    cached = vlm.generate(images, prompts, max_new_tokens=6, min_new_tokens=4)
    assert all(cached)
    assert cached == vlm.generate(images, prompts, max_new_tokens=6, min_new_tokens=4, use_cache=False)
    for image, prompt, answer in zip(images, prompts, cached, strict=True):
        assert vlm.generate([image], [prompt], max_new_tokens=6, min_new_tokens=4) == [answer]
    probs = vlm.first_token_probs(images, prompts, ["red", "green", "blue", "yellow"])
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in probs)
    # Blind: the image no longer matters, so two images give the same bits. Bitwise identity holds only for the
    # same shapes at the same batch position (CPU kernels may round batch rows differently), so each image
    # is scored alone.
    blind = [vlm.first_token_probs([image], [prompts[0]], ["red", "green"], blind=True)[0] for image in images[:2]]
    seeing = [vlm.first_token_probs([image], [prompts[0]], ["red", "green"])[0] for image in images[:2]]
    assert blind[0] == blind[1] and seeing[0] != seeing[1]


# MaxViT nano's frozen encoder holds BatchNorm statistics: buffers that are neither saved nor checked as trained.
@pytest.mark.parametrize("backbone", ["vit_nano", "maxvit_nano"])
def test_kill_and_resume_is_bitwise_identical(tmp_path: Path, data_json: Path, backbone: str) -> None:
    model = [f"model.backbone={backbone}", "model.image_size=64"]
    config = make_config(data_json, "optim.max_steps=6", "logging.checkpoint_every=2", *model)
    whole = train_vlm(config, tmp_path / "whole", show_progress=False)
    train_vlm(config, tmp_path / "cut", stop_after=3, show_progress=False)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train_vlm(config, tmp_path / "cut", resume=False, show_progress=False)
    resumed = train_vlm(config, tmp_path / "cut", show_progress=False)
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("vision_backbone.") for k in a)  # the frozen encoder is rebuilt, never saved
    if backbone == "maxvit_nano":  # a checkpoint written before that filter, with the encoder's statistics, resumes
        train_vlm(config, tmp_path / "old", stop_after=3, show_progress=False)
        checkpoint = tmp_path / "old" / "checkpoints" / "step-00000003" / "trainable.safetensors"
        encoder = load_vlm(whole, device="cpu").vision_backbone
        buffers = dict(encoder.named_buffers())
        statistics = {f"vision_backbone.{k}": v for k, v in encoder.state_dict().items() if k in buffers}
        save_file({**load_file(checkpoint), **statistics}, checkpoint)
        old = load_file(train_vlm(config, tmp_path / "old", show_progress=False) / "model.safetensors")
        assert old.keys() == a.keys() and all(torch.equal(old[k], a[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_changed_config_does_not_resume(tmp_path: Path, data_json: Path) -> None:
    train_vlm(make_config(data_json, "optim.max_steps=2"), tmp_path, stop_after=1, show_progress=False)
    differs = r"model\.connector: .* holds a run with model\.connector='gelu-mlp', not 'linear'"
    with pytest.raises(ConfigError, match=differs):
        train_vlm(
            make_config(data_json, "optim.max_steps=2", "model.connector=linear"),
            tmp_path,
            show_progress=False,
        )


def test_nan_loss_stops_naming_step_batch_and_checkpoint(tmp_path: Path, data_json: Path, monkeypatch) -> None:
    build = loop.build_vlm

    def poisoned(*args, **kwargs):
        vlm = build(*args, **kwargs)
        torch.nn.init.constant_(vlm.connector.projector[0].weight, float("nan"))
        return vlm

    monkeypatch.setattr(loop, "build_vlm", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"step 1: non-finite loss .*mini-\d+.*last good checkpoint: none"):
        train_vlm(make_config(data_json, "optim.max_steps=2"), tmp_path, show_progress=False)


def test_divergence_between_log_steps_is_caught_before_the_next_checkpoint(
    tmp_path: Path, data_json: Path, monkeypatch
) -> None:
    """The watch reads the loss on log and checkpoint steps only: a NaN from step 4 on (not a log step) is named
    at step 4's checkpoint, and that checkpoint is not written."""
    build = loop.build_vlm

    def poisoned_from_step_4(*args, **kwargs):
        vlm = build(*args, **kwargs)
        calls = []  # two micro-batches a step: the 7th call is step 4's first

        def hook(module, inputs, output):
            calls.append(1)
            return output * float("nan") if len(calls) >= 7 else output

        vlm.connector.register_forward_hook(hook)
        return vlm

    monkeypatch.setattr(loop, "build_vlm", poisoned_from_step_4)
    config = make_config(data_json, "optim.max_steps=8", "logging.log_every=5", "logging.checkpoint_every=2")
    with pytest.raises(TrainingDivergedError, match=r"step 4: non-finite loss .*mini-\d+.*step-00000002"):
        train_vlm(config, tmp_path, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002"]


def test_undecodable_image_is_an_error_or_a_counted_skip(tmp_path: Path) -> None:
    data = make_mini_llava(tmp_path / "data", 8, size=48)
    (tmp_path / "data" / "images" / "0003.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"0003\.png.*cannot decode"):
        train_vlm(make_config(data, "optim.max_steps=1"), tmp_path / "a", show_progress=False)
    run = train_vlm(make_config(data, "optim.max_steps=1", "data.skip_bad=true"), tmp_path / "b", show_progress=False)
    assert json.loads((run / "run.json").read_text())["skipped_samples"] == 1


def test_checkpoint_of_another_architecture_is_refused(trained, tmp_path: Path) -> None:
    config = json.loads((trained[0] / "config.json").read_text())
    config["model"]["connector"] = "fused-gelu-mlp"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((trained[0] / "model.safetensors").read_bytes())
    (tmp_path / "tokenizer").symlink_to(trained[0] / "tokenizer")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_vlm(tmp_path, device="cpu")
    vlm = load_vlm(trained[0], device="cpu")
    with pytest.raises(CheckpointError):
        load_trained_weights(vlm, tmp_path / "missing.safetensors")


def test_lowercase_tokenizer_and_tied_embeddings_train_save_resume_and_load(tmp_path: Path, data_json: Path) -> None:
    config = make_config(
        data_json,
        "model.tokenizer_lowercase=true",
        "model.tie_word_embeddings=true",
        "optim.max_steps=4",
        "logging.checkpoint_every=2",
    )
    run = train_vlm(config, tmp_path / "run", stop_after=2, show_progress=False)
    run = train_vlm(config, run, show_progress=False)  # resumes from the step-2 checkpoint
    vlm = load_vlm(run, device="cpu")
    llm = vlm.llm
    assert llm.lm_head.weight is llm.get_input_embeddings().weight
    saved = load_file(run / "model.safetensors")
    assert torch.equal(saved["llm.lm_head.weight"], saved["llm.model.embed_tokens.weight"])
    assert torch.equal(llm.lm_head.weight, saved["llm.lm_head.weight"])
    words = vlm.tokenizer(["Red", "red", "RED"], add_special_tokens=False).input_ids
    assert words[0] == words[1] == words[2]
    with pytest.raises(ConfigError, match=r"model\.tie_word_embeddings: applies to tiny LLM presets only"):
        train_vlm(make_config(data_json, "model.llm=/no/local/llm", "model.tie_word_embeddings=true"), tmp_path / "b")
    with pytest.raises(ConfigError, match=r"model\.llm_init_std: applies to tiny LLM presets only"):
        train_vlm(make_config(data_json, "model.llm=/no/local/llm", "model.llm_init_std=0.05"), tmp_path / "c")


def test_train_and_chat_cli(tmp_path: Path, trained, data_json: Path) -> None:
    from ssmvlm.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            *BASE,
            f"data.train_json={data_json}",
            "optim.max_steps=1",
            "--out",
            str(tmp_path / "cli"),
            "--config",
            "shapes-cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (saved["model"]["image_size"], saved["recipe"], saved["device"]) == (48, "shapes", "cpu")
    image = data_json.parent / "images" / "0001.png"
    result = runner.invoke(
        app,
        [
            "chat",
            "--run",
            str(trained[0]),
            "--image",
            str(image),
            "--prompt",
            "What color is the shape?",
            "--max-new-tokens",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    expected = load_vlm(trained[0], device="cpu").generate(
        [Image.open(image).convert("RGB")], ["What color is the shape?"], max_new_tokens=4
    )[0]
    assert result.output.strip() == expected


def test_feature_cache_gives_the_uncached_features(trained, data_json: Path) -> None:
    from ssmvlm.data.llava import load_llava_records
    from ssmvlm.train.features import ImageFeatureSource

    vlm = load_vlm(trained[0], device="cpu")
    paths = [r.image for r in load_llava_records(data_json)][:6]
    cached = ImageFeatureSource(vlm, paths, torch.device("cpu"), cache="on")
    cached.precompute(show_progress=False)
    uncached = ImageFeatureSource(vlm, paths, torch.device("cpu"), cache="off")
    rows = [4, None, 1, 0]
    a, b = cached.features(rows), uncached.features(rows)
    assert cached.cache is not None and uncached.cache is None
    # The cache encodes all images in one chunk, the uncached path only this micro-batch's three: CPU kernels
    # may round rows of different batch sizes differently, so the features agree to float32 rounding, not bits.
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6) and torch.equal(a[1], torch.zeros_like(a[1]))


@pytest.mark.parametrize("position", ["after-bos", "after-question", "before-answer"])
def test_training_and_inference_read_the_same_sequence(tmp_path: Path, data_json: Path, position: str) -> None:
    """Each image position: the answer's log-probability under the training layout (dataset → collate →
    forward) is the one inference computes, so what the model learns is what evaluation asks."""
    from ssmvlm.data.llava import load_llava_records
    from ssmvlm.train.dataset import build_conversation_data, collate
    from ssmvlm.vlm.conversation import continuation_logprob

    config = make_config(data_json, "optim.max_steps=4", f"model.image_position={position}", "data.split_turns=true")
    vlm = load_vlm(train_vlm(config, tmp_path / "run", show_progress=False), device="cpu")
    record = next(r for r in load_llava_records(data_json) if r.image is not None)
    question, answer = record.turns[0][1], record.turns[1][1]
    data = build_conversation_data(
        [record],
        vlm.tokenizer,
        vlm.prompt_format,
        max_length=2048,
        stage="no-align",
        source=data_json,
        skip_bad=False,
        split_turns=True,
    )
    batch = collate(data.samples[:1], vlm.tokenizer.pad_token_id)
    assert batch.prompt_lengths.tolist() == [len(vlm.tokenizer(vlm.prompt_format.inference_prompt(question)).input_ids)]
    image = Image.open(record.image).convert("RGB")
    pixels = vlm.image_transform(image)[None]
    with torch.no_grad():
        out = vlm(
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            pixel_values=pixels,
            prompt_lengths=batch.prompt_lengths,
        )
    # the answer's text tokens (the closing </s> aside: continuation_logprob leaves it out), each predicted by
    # the position before it, K patch positions further on in the spliced sequence
    answer_tokens = torch.nonzero(batch.labels[0] != -100).flatten()[:-1]
    predicting = answer_tokens + vlm.vision_backbone.num_tokens() - 1
    logprobs = torch.log_softmax(out.logits[0, predicting].float(), dim=-1)
    training = logprobs.gather(1, batch.input_ids[0, answer_tokens][:, None]).sum().item()
    inference, _ = continuation_logprob(vlm, image, question.replace("<image>", ""), answer)
    assert training == pytest.approx(inference, abs=1e-4)


def test_trains_on_generated_shapescenes(tmp_path: Path) -> None:
    from ssmvlm.data.shapes import generate_shapescenes

    generate_shapescenes(tmp_path / "shapes", size=10, image_size=48, seed=0, show_progress=False)
    config = make_config(tmp_path / "shapes" / "train" / "llava.json", "optim.max_steps=3")
    run = train_vlm(config, tmp_path / "run", show_progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_model_box_frame_trains_on_boxes_in_the_model_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ssmvlm.data.box_frames import answers_in_model_frame
    from ssmvlm.data.llava import load_llava_records
    from ssmvlm.data.shapes import generate_shapescenes
    from ssmvlm.data.transforms import build_image_transform

    generate_shapescenes(tmp_path / "shapes", size=10, image_size=48, seed=0, show_progress=False)
    train_json = tmp_path / "shapes" / "train" / "llava.json"
    trained_on = []
    build = loop.build_conversation_data

    def capture(records, *args, **kwargs):
        trained_on.extend(records)
        return build(records, *args, **kwargs)

    monkeypatch.setattr(loop, "build_conversation_data", capture)
    config = make_config(train_json, "optim.max_steps=1", "model.box_frame=model")
    run = train_vlm(config, tmp_path / "run", show_progress=False)

    raw = load_llava_records(train_json)
    expected = answers_in_model_frame(raw, build_image_transform("letterbox", 48))
    assert [r.turns for r in trained_on] == [r.turns for r in expected]
    assert [r.turns for r in trained_on] != [r.turns for r in raw]  # the non-square images' boxes moved
    assert load_vlm(run, device="cpu").box_frame == "model"  # and evaluation scores it in that frame
