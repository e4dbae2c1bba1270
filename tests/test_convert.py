"""`ssmvlm convert`: release/prismatic run folders ↔ ssmvlm runs, on fixtures written in the exact layout.

The fixtures are what prismatic-vlms' training writes (``config.json`` with its ``"model"`` section, and
``checkpoints/latest-checkpoint.pt`` = ``{"model": {"projector": ..., "llm_backbone": ...}}``), with random
tensors: a tiny Llama under its real key names (``llm.model.layers.N.*``), a projector of each arch, and the
Vicuna convention of a ``<PAD>`` token added to the tokenizer and embeddings padded to a multiple of 64.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

from ssmvlm.convert import from_release, to_release
from ssmvlm.convert.release import CHECKPOINT, CONVERTED_CHECKPOINT
from ssmvlm.utils.errors import CheckpointError, ConfigError, DataError, SsmvlmError

HIDDEN = 32
CORPUS = ["What colour is the square?", "A red square on the left.", "Is there a circle? Yes. No."] * 20


def _write_llm_dir(path: Path, *, pad: bool) -> int:
    """A Vicuna-like tokenizer (BOS <s>, EOS </s>, UNK, with or without a pad token) and a tiny Llama config,
    no weights. Returns the tokenizer's length as saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        **({"pad_token": "<pad>"} if pad else {}),
    )
    tokenizer.save_pretrained(str(path))
    LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2,
    ).save_pretrained(str(path))  # fmt: skip
    return len(tokenizer)


def _llm_state(rows: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=rows, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(1)
    return {f"llm.{k}": v.to(dtype) for k, v in LlamaForCausalLM(config).state_dict().items()}


def _projector(arch: str, vision_dim: int, llm_dim: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """prismatic's projector state dict: LinearProjector / MLPProjector / FusedMLPProjector key names."""
    if arch == "linear":
        shapes = {"projector.weight": (llm_dim, vision_dim), "projector.bias": (llm_dim,)}
    elif arch == "gelu-mlp":
        shapes = {"projector.0.weight": (llm_dim, vision_dim), "projector.0.bias": (llm_dim,),
                  "projector.2.weight": (llm_dim, llm_dim), "projector.2.bias": (llm_dim,)}  # fmt: skip
    else:
        hidden = 4 * vision_dim
        shapes = {"projector.0.weight": (hidden, vision_dim), "projector.0.bias": (hidden,),
                  "projector.2.weight": (llm_dim, hidden), "projector.2.bias": (llm_dim,),
                  "projector.4.weight": (llm_dim, llm_dim), "projector.4.bias": (llm_dim,)}  # fmt: skip
    generator = torch.Generator().manual_seed(2)
    return {k: (0.02 * torch.randn(s, generator=generator)).to(dtype) for k, s in shapes.items()}


def _write_source(
    path: Path, *, model: dict, projector: dict, llm: dict, extra: dict | None = None
) -> Path:
    """A run folder as prismatic's scripts/pretrain.py writes it (draccus config dumped to JSON)."""
    (path / "checkpoints").mkdir(parents=True)
    config = {
        "model": {"type": model["model_id"], **model, "align_epochs": 1, "finetune_epochs": 1,
                  "finetune_global_batch_size": 128, "finetune_learning_rate": 2e-05,
                  "enable_mixed_precision_training": True},
        "dataset": {"type": "llava-v15", "dataset_id": "llava-v15"},
        "stage": "finetune", "pretrained_checkpoint": None, "run_id": model["model_id"] + "+x7", "seed": 7,
        **(extra or {}),
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=2))
    torch.save({"model": {"projector": projector, "llm_backbone": llm}}, path / CHECKPOINT)
    return path


def _release_model(vision_id: str, arch: str = "no-align+gelu-mlp", **extra: object) -> dict:
    return {"model_id": f"{vision_id}+7b-vicuna", "arch_specifier": arch, "vision_backbone_id": vision_id,
            "llm_backbone_id": "vicuna-v15-7b", "image_resize_strategy": "letterbox", "llm_max_length": 2048,
            **extra}  # fmt: skip


def _rows(saved_tokens: int) -> int:
    # prismatic adds "<PAD>" (a new token) and pads the embeddings to a multiple of 64.
    return math.ceil((saved_tokens + 1) / 64) * 64


def _vit_s_source(tmp_path: Path, extra: dict | None = None) -> tuple[Path, Path]:
    """The release's ViT-S (IN-1k) run in ``tmp_path/src`` and its Vicuna-like LLM folder (no pad token)."""
    llm_dir = tmp_path / "vicuna"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    src = _write_source(tmp_path / "src", model=_release_model("in1k-vit-s"),
                        projector=_projector("gelu-mlp", 384, HIDDEN, torch.float32),
                        llm=_llm_state(rows, torch.float32), extra=extra)  # fmt: skip
    return src, llm_dir


def _assert_one_line(exc: pytest.ExceptionInfo) -> None:
    assert isinstance(exc.value, SsmvlmError)
    assert "\n" not in str(exc.value)


def _round_trip(src: Path, run: Path, back: Path) -> None:
    """to-release of ``run`` gives ``src``'s tensors bit for bit and its model config."""
    to_release(run, back)
    original = torch.load(src / CHECKPOINT, weights_only=True)["model"]
    written = torch.load(back / CHECKPOINT, weights_only=True)["model"]
    assert sorted(written) == ["llm_backbone", "projector"]
    for module in ("projector", "llm_backbone"):
        assert sorted(written[module]) == sorted(original[module])
        for key, value in original[module].items():
            assert written[module][key].dtype == value.dtype, key
            assert torch.equal(written[module][key], value), key
    assert json.loads((back / "config.json").read_text()) == json.loads((src / "config.json").read_text())


def test_release_vit_s_converts_generates_and_round_trips(tmp_path: Path) -> None:
    from PIL import Image

    from ssmvlm.vlm import load_vlm

    llm_dir = tmp_path / "vicuna"
    saved_tokens = _write_llm_dir(llm_dir, pad=False)
    rows = _rows(saved_tokens)
    projector = _projector("gelu-mlp", 384, HIDDEN, torch.float32)
    src = _write_source(tmp_path / "vit-s-in1k-224", model=_release_model("in1k-vit-s"), projector=projector,
                        llm=_llm_state(rows, torch.float32))  # fmt: skip

    result = from_release(src, tmp_path / "run", llm_dir=llm_dir)
    assert any("random initialization" in w for w in result.warnings)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert saved["backbone"] == "vit_small_patch16" and saved["feature_tap"] == "b-2"
    assert (saved["image_size"], saved["resize_strategy"], saved["connector"]) == (224, "letterbox", "gelu-mlp")
    assert saved["prompt_format"] == "vicuna-v15"

    vlm = load_vlm(tmp_path / "run", device="cpu")
    assert vlm.tokenizer.pad_token == "<PAD>" and len(vlm.tokenizer) == saved_tokens + 1
    assert vlm.llm.get_input_embeddings().weight.shape[0] == rows
    assert torch.equal(vlm.connector.projector[2].weight, projector["projector.2.weight"])
    answers = vlm.generate([Image.new("RGB", (64, 48), (200, 30, 30))], ["What colour is the square?"],
                           max_new_tokens=3)  # fmt: skip
    assert len(answers) == 1 and isinstance(answers[0], str)

    _round_trip(src, tmp_path / "run", tmp_path / "back")


@pytest.mark.parametrize(("arch", "dtype"), [("linear", torch.float32), ("fused-gelu-mlp", torch.bfloat16)])
def test_release_projectors_round_trip_with_a_pad_token_already_there(
    tmp_path: Path, arch: str, dtype: torch.dtype
) -> None:
    llm_dir = tmp_path / "vicuna"
    saved_tokens = _write_llm_dir(llm_dir, pad=True)  # "<pad>" already there: prismatic still adds "<PAD>"
    src = _write_source(tmp_path / "src", model=_release_model("in1k-224px-maxvit-t-s3", arch),
                        projector=_projector(arch, 256, HIDDEN, dtype), llm=_llm_state(_rows(saved_tokens), dtype))

    from_release(src, tmp_path / "run", llm_dir=llm_dir)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["backbone"], saved["feature_tap"], saved["connector"]) == ("maxvit_tiny_tf", "s3", arch)
    assert saved["llm_dtype"] == ("bfloat16" if dtype == torch.bfloat16 else "float32")
    _round_trip(src, tmp_path / "run", tmp_path / "back")


def test_release_dense_vmamba_keeps_its_tap_geometry_and_round_trips(tmp_path: Path) -> None:
    llm_dir = tmp_path / "vicuna"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    model = _release_model("vmamba-small-s2l15-det-maskrcnn-1x", vmamba_feature_stage=3, vmamba_feature_layer=14)
    src = _write_source(tmp_path / "src", model=model, projector=_projector("gelu-mlp", 384, HIDDEN, torch.float32),
                        llm=_llm_state(rows, torch.float32))  # fmt: skip

    from_release(src, tmp_path / "run", llm_dir=llm_dir)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["backbone"], saved["feature_tap"]) == ("vmamba_small_s2l15", "s3.b14.outnorm")
    assert (saved["image_size"], saved["resize_strategy"]) == ([800, 1333], "letterbox-br-down")
    _round_trip(src, tmp_path / "run", tmp_path / "back")


def test_prismatic_dinosiglip_converts_and_round_trips(tmp_path: Path) -> None:
    llm_dir = tmp_path / "llama2"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    model = {"model_id": "prism-dinosiglip+7b", "arch_specifier": "no-align+fused-gelu-mlp",
             "vision_backbone_id": "dinosiglip-vit-so-384px", "llm_backbone_id": "llama2-7b-pure",
             "image_resize_strategy": "resize-naive", "llm_max_length": 2048}  # fmt: skip
    # the fused projector's first layer is 2176 → 4·2176: the pair's concatenated width, checked by the converter
    src = _write_source(tmp_path / "prism", model=model, projector=_projector("fused-gelu-mlp", 2176, HIDDEN,
                        torch.bfloat16), llm=_llm_state(rows, torch.bfloat16))  # fmt: skip

    from_release(src, tmp_path / "run", llm_dir=llm_dir)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["backbone"], saved["feature_tap"], saved["image_size"]) == ("dinosiglip-vit-so-384px", "b-2", 384)
    assert (saved["resize_strategy"], saved["prompt_format"]) == ("resize-naive", "plain")
    _round_trip(src, tmp_path / "run", tmp_path / "back")


def test_wrong_vocabulary_size_is_one_line(tmp_path: Path) -> None:
    llm_dir = tmp_path / "vicuna"
    saved_tokens = _write_llm_dir(llm_dir, pad=False)
    src = _write_source(tmp_path / "src", model=_release_model("in1k-vit-s"),
                        projector=_projector("gelu-mlp", 384, HIDDEN, torch.float32),
                        llm=_llm_state(_rows(saved_tokens) + 64, torch.float32))  # fmt: skip
    with pytest.raises(CheckpointError, match="rows") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)
    assert not (tmp_path / "run").exists()


def test_projector_of_another_tap_is_one_line(tmp_path: Path) -> None:
    llm_dir = tmp_path / "vicuna"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    # a projector trained on VMamba-S stage 4 (768-d) under a config that names stage 3 (384-d)
    model = _release_model("vmamba-small-s2l15", vmamba_feature_stage=3, vmamba_feature_layer=14)
    src = _write_source(tmp_path / "src", model=model, projector=_projector("gelu-mlp", 768, HIDDEN, torch.float32),
                        llm=_llm_state(rows, torch.float32))  # fmt: skip
    with pytest.raises(CheckpointError, match=r"tap s3\.b14") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)


def test_vmamba_fields_on_another_encoder_are_one_line(tmp_path: Path) -> None:
    src, llm_dir = _vit_s_source(tmp_path, extra={"vmamba_feature_stage": 3})
    with pytest.raises(DataError, match="vmamba_feature_stage") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)


def test_run_with_another_tap_has_no_release_id(tmp_path: Path) -> None:
    """MambaVision-B's release "s3" is ssmvlm's s3.in; a run on ssmvlm's s3 (same shape) must not pass as it."""
    llm_dir = tmp_path / "vicuna"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    src = _write_source(tmp_path / "src", model=_release_model("mambavision-b-s3"),
                        projector=_projector("gelu-mlp", 512, HIDDEN, torch.float32),
                        llm=_llm_state(rows, torch.float32))  # fmt: skip
    from_release(src, tmp_path / "run", llm_dir=llm_dir)
    config_path = tmp_path / "run" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["model"]["feature_tap"] == "s3.in"
    config["model"]["feature_tap"] = "s3"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="no release or prismatic id") as exc:
        to_release(tmp_path / "run", tmp_path / "back")
    _assert_one_line(exc)


def test_pickled_checkpoint_is_refused_with_the_conversion_that_fixes_it(tmp_path: Path) -> None:
    from ssmvlm.utils.convert_checkpoint import convert

    src, llm_dir = _vit_s_source(tmp_path)
    checkpoint = torch.load(src / CHECKPOINT, weights_only=True)
    torch.save({**checkpoint, "args": argparse.Namespace(lr=2e-5)}, src / CHECKPOINT)  # a pickled config object
    with pytest.raises(CheckpointError, match="convert_checkpoint") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)

    convert(src / CHECKPOINT, src / CONVERTED_CHECKPOINT)  # what the message says to run (trusted file)
    from_release(src, tmp_path / "run", llm_dir=llm_dir)
    (src / CHECKPOINT).write_bytes(b"")  # the converted file is what was read
    to_release(tmp_path / "run", tmp_path / "back")
    written = torch.load(tmp_path / "back" / CHECKPOINT, weights_only=True)["model"]
    for module in ("projector", "llm_backbone"):
        assert all(torch.equal(written[module][k], v) for k, v in checkpoint["model"][module].items())


def test_run_without_llm_weights_anywhere_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src, llm_dir = _vit_s_source(tmp_path)
    from_release(src, tmp_path / "run", llm_dir=llm_dir)
    weights = tmp_path / "run" / "model.safetensors"
    save_file({k: v for k, v in load_file(str(weights)).items() if k.startswith("connector.")}, str(weights))
    with pytest.raises(CheckpointError, match="no LLM weights") as exc:  # llm/ holds only the config
        to_release(tmp_path / "run", tmp_path / "back")
    _assert_one_line(exc)


def test_fine_tuned_encoder_in_the_checkpoint_is_refused(tmp_path: Path) -> None:
    src, llm_dir = _vit_s_source(tmp_path)
    checkpoint = torch.load(src / CHECKPOINT, weights_only=True)
    checkpoint["model"]["vision_backbone"] = {"featurizer.pos_embed": torch.zeros(1, 197, 384)}  # full-finetune
    torch.save(checkpoint, src / CHECKPOINT)
    with pytest.raises(CheckpointError, match="vision_backbone") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)


def test_pickled_or_malformed_config_is_one_line(tmp_path: Path) -> None:
    import pickle

    llm_dir = tmp_path / "vicuna"
    _write_llm_dir(llm_dir, pad=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_bytes(pickle.dumps({"model": {"vision_backbone_id": "in1k-vit-s"}}))
    with pytest.raises(DataError, match=r"config\.json") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)
    (src / "config.json").write_text(json.dumps({"model": {"vision_backbone_id": "in1k-vit-s"}}))
    with pytest.raises(DataError, match=r"model\.model_id") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)


def test_unknown_encoder_id_is_one_line(tmp_path: Path) -> None:
    llm_dir = tmp_path / "vicuna"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    src = _write_source(tmp_path / "src", model=_release_model("perceiver-in1k"),
                        projector=_projector("gelu-mlp", 768, HIDDEN, torch.float32),
                        llm=_llm_state(rows, torch.float32))  # fmt: skip
    with pytest.raises(DataError, match="unknown encoder") as exc:
        from_release(src, tmp_path / "run", llm_dir=llm_dir)
    _assert_one_line(exc)


def test_public_model_id_and_archive_root_folder_are_accepted(tmp_path: Path) -> None:
    llm_dir = tmp_path / "vicuna"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    model = _release_model("mambavision-b-in1k-224-s3")  # the public id where the config id belongs
    _write_source(tmp_path / "download" / "mambavision-b-in1k-224-s3", model=model,
                  projector=_projector("gelu-mlp", 512, HIDDEN, torch.float32),
                  llm=_llm_state(rows, torch.float32))  # fmt: skip
    from_release(tmp_path / "download", tmp_path / "run", llm_dir=llm_dir)  # the archive's root folder inside
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["backbone"], saved["feature_tap"]) == ("mambavision_b", "s3.in")


def test_cli_converts_both_ways(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ssmvlm.cli import app

    llm_dir = tmp_path / "vicuna"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    src = _write_source(tmp_path / "src", model=_release_model("in1k-vit-s", "linear"),
                        projector=_projector("linear", 384, HIDDEN, torch.float32),
                        llm=_llm_state(rows, torch.float32))  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "from-release", str(src), "--out", str(tmp_path / "run"),
                                 "--llm", str(llm_dir)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "wrote" in result.output
    result = runner.invoke(app, ["convert", "to-release", str(tmp_path / "run"), "--out", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "back" / CHECKPOINT).is_file()


def test_converted_run_answers_through_chat_and_evaluate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ssmvlm.cli import app

    src, llm_dir = _vit_s_source(tmp_path)
    from_release(src, tmp_path / "run", llm_dir=llm_dir)
    shapes = Path(__file__).parent / "fixtures" / "eval" / "shapes"
    image = next((shapes / "images" / "test").iterdir())
    runner = CliRunner()
    result = runner.invoke(app, ["chat", "--run", str(tmp_path / "run"), "--image", str(image), "--prompt",
                                 "What colour is the square?", "--max-new-tokens", "2", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "--run", str(tmp_path / "run"), "--tasks", "shapes-vqa", "--data",
                                 str(shapes), "--limit", "2", "--no-controls", "--max-new-tokens", "2",
                                 "--device", "cpu", "--out", str(tmp_path / "eval")])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert "shapes-vqa" in results["tasks"]


def test_prismatic_fused_pair_run_generates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prism-dinosiglip's converted run answers: the real pair at its real widths (2176-d tokens at 384²), with
    two blocks per member instead of 24/27 so that it runs in seconds on a CPU."""
    from PIL import Image

    import ssmvlm.backbones.zoo as zoo
    from ssmvlm.vlm import load_vlm

    llm_dir = tmp_path / "llama2"
    rows = _rows(_write_llm_dir(llm_dir, pad=False))
    model = {"model_id": "prism-dinosiglip+7b", "arch_specifier": "no-align+fused-gelu-mlp",
             "vision_backbone_id": "dinosiglip-vit-so-384px", "llm_backbone_id": "llama2-7b-pure",
             "image_resize_strategy": "resize-naive", "llm_max_length": 2048}  # fmt: skip
    src = _write_source(tmp_path / "prism", model=model, projector=_projector("fused-gelu-mlp", 2176, HIDDEN,
                        torch.float32), llm=_llm_state(rows, torch.float32))  # fmt: skip
    from_release(src, tmp_path / "run", llm_dir=llm_dir)

    create = zoo.create_vision_backbone
    monkeypatch.setattr(zoo, "create_vision_backbone", lambda name, **kw: create(name, depth=2, **kw))
    vlm = load_vlm(tmp_path / "run", device="cpu")
    assert vlm.vision_backbone.num_tokens() == 729 and vlm.vision_backbone.embed_dim == 2176
    answers = vlm.generate([Image.new("RGB", (500, 300), (20, 120, 200))], ["What is shown?"], max_new_tokens=2)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_vision_checkpoint_is_checked_and_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    from ssmvlm.backbones import create_vision_backbone

    src, llm_dir = _vit_s_source(tmp_path)
    monkeypatch.chdir(tmp_path)
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(8, 8)}, "other.safetensors")
    with pytest.raises(CheckpointError, match="vit_small_patch16") as exc:  # another architecture: fails now
        from_release(src, tmp_path / "bad", llm_dir=llm_dir, vision_checkpoint="other.safetensors")
    _assert_one_line(exc)
    assert not (tmp_path / "bad").exists()

    save_file(create_vision_backbone("vit_small_patch16").trunk.state_dict(), "vit_s.safetensors")
    result = from_release(src, tmp_path / "run", llm_dir=llm_dir, vision_checkpoint="vit_s.safetensors")
    assert result.warnings == []
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert saved["checkpoint"] == str(tmp_path / "vit_s.safetensors")
    assert (tmp_path / "run" / "encoder.json").is_file()

    from ssmvlm.vlm import load_vlm

    load_vlm(tmp_path / "run", device="cpu")  # the recorded encoder is the one rebuilt
    save_file(create_vision_backbone("vit_small_patch16").trunk.state_dict(), "vit_s.safetensors")  # replaced
    with pytest.raises(CheckpointError, match="encoder weights sha256") as exc:
        load_vlm(tmp_path / "run", device="cpu")
    _assert_one_line(exc)
