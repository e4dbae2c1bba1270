"""Building a VLM from its config, saving its trained weights, and loading a trained run back.

A run directory holds ``config.json`` (the resolved training config, whose ``model`` section is a
:class:`VLMConfig`), ``tokenizer/`` (Hugging Face format) and ``model.safetensors`` (the trained weights only:
connector, plus the LLM when it was trained). The frozen encoder is rebuilt from the zoo and its checkpoint,
a tiny LLM from its preset and the run seed, a local LLM from its directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ssmvlm.config import from_dict
from ssmvlm.connectors import build_connector
from ssmvlm.data.box_frames import BoxFrame
from ssmvlm.data.transforms import as_height_width
from ssmvlm.utils.device import resolve_device
from ssmvlm.utils.errors import CheckpointError, ConfigError
from ssmvlm.utils.io import read_json
from ssmvlm.utils.run_folder import CONFIG_FILE
from ssmvlm.vlm.llm import (
    TINY_LLAMA_PRESETS,
    build_tiny_llm,
    check_vocab_fits,
    is_tiny_preset,
    load_local_llm,
    load_tokenizer,
    train_tokenizer,
)
from ssmvlm.vlm.model import VLM
from ssmvlm.vlm.prompts import get_prompt_format

TOKENIZER_DIR = "tokenizer"
# The model fields that shape a tiny LLM built from scratch; a local LLM keeps its own.
TINY_LLM_KEYS = ("tokenizer_lowercase", "tie_word_embeddings", "llm_init_std")
WEIGHTS_FILE = "model.safetensors"
ENCODER_FILE = "encoder.json"  # the frozen encoder's weight hash: a run is only loaded with the same encoder
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class VLMConfig:
    """What a VLM is made of. Only ``backbone``, ``checkpoint``, ``image_size``, ``resize_strategy`` and
    ``feature_tap`` change between the runs of a study; the rest is the fixed recipe."""

    backbone: str = "vit_nano"
    checkpoint: str | None = None
    image_size: int | tuple[int, int] = 224  # square side, or (height, width) such as (800, 1333)
    resize_strategy: Literal["resize-naive", "resize-crop", "letterbox", "letterbox-br", "letterbox-br-down"] = (
        "letterbox"
    )
    feature_tap: str | None = None
    vision_dtype: Literal["float32", "bfloat16"] = "float32"
    connector: Literal["linear", "gelu-mlp", "fused-gelu-mlp"] = "gelu-mlp"
    token_pool: int = 1
    connector_norm: bool = False  # a LayerNorm on the encoder's tokens before the projector (connectors/)
    llm: str = "tiny-llama-2m"  # a tiny preset name or a local Hugging Face model directory
    llm_dtype: Literal["float32", "bfloat16"] = "float32"
    prompt_format: Literal["vicuna-v15", "plain"] = "vicuna-v15"
    # after-bos: prismatic's [BOS, image, text]; after-question: [BOS, first user turn, image, answer];
    # before-answer: [BOS, first user turn without its answer tag, image, tag, answer] (model.py)
    image_position: Literal["after-bos", "after-question", "before-answer"] = "after-bos"
    tokenizer_vocab_size: int | None = None  # tiny presets: BPE size (default: the preset's)
    # Tiny presets. tokenizer_lowercase: the BPE lowercases ("Red", an answer, and "red", in a question, are one
    # token). tie_word_embeddings: the LM head is the input embedding; with it a from-scratch LLM learns yes/no
    # questions about one-object scenes from the image, which it otherwise answers from the language prior
    # (ShapeScenes-POPE 48-51 -> 82 on one encoder; the lowercasing alone did nothing). On three-object scenes it
    # changed nothing (benchmarks/RESULTS.md, "Yes/no questions").
    tokenizer_lowercase: bool = False
    tie_word_embeddings: bool = False
    # Tiny presets: the std of the LLM's weights at initialization (None: Hugging Face Llama's 0.02). At width 128,
    # 0.02 is a quarter of 1/sqrt(width); from there the attention logits start near zero and a from-scratch LLM
    # reads no image for yes/no answers (benchmarks/RESULTS.md, "What opens the image path").
    llm_init_std: float | None = None
    max_length: int = 2048  # text tokens per sample, before the image patches are inserted
    # The frame of the box answers it is trained on and scored in: raw (over the original image) or model (over
    # its input frame, e.g. the letterboxed square; ssmvlm.data.box_frames).
    box_frame: BoxFrame = "raw"


def tokenizer_corpus(turn_lists: Iterable[list[tuple[str, str]]], prompt_format: str) -> Iterator[str]:
    """The strings the model will see: every turn wrapped in the prompt format (system prompt included)."""
    fmt = get_prompt_format(prompt_format)
    for turns in turn_lists:
        yield from fmt.turn_strings(turns)


def prepare_tokenizer(
    config: VLMConfig, run_dir: Path, turn_lists: Iterable[list[tuple[str, str]]] | None = None
) -> Any:
    """The run's tokenizer: saved in ``run_dir/tokenizer`` (trained there first for a tiny preset)."""
    if not is_tiny_preset(config.llm):
        for name in TINY_LLM_KEYS:
            if getattr(config, name):
                raise ConfigError(f"model.{name}", "applies to tiny LLM presets only (a local LLM keeps its own)")
    saved = Path(run_dir) / TOKENIZER_DIR
    if saved.is_dir():
        return load_tokenizer(saved)
    if is_tiny_preset(config.llm):
        if turn_lists is None:
            raise CheckpointError(f"{saved}: tokenizer of a tiny LLM preset not found")
        vocab = config.tokenizer_vocab_size or TINY_LLAMA_PRESETS[config.llm].vocab_size
        corpus = tokenizer_corpus(turn_lists, config.prompt_format)
        train_tokenizer(corpus, vocab, _staging(saved), lowercase=config.tokenizer_lowercase)
        _staging(saved, create=False).rename(saved)
        return load_tokenizer(saved)
    tokenizer = load_tokenizer(Path(config.llm))
    tokenizer.save_pretrained(str(_staging(saved)))
    _staging(saved, create=False).rename(saved)
    return tokenizer


def _staging(folder: Path, *, create: bool = True) -> Path:
    """A fresh sibling folder to save into, renamed onto ``folder`` once complete: a run killed while saving
    leaves no partial ``folder`` that a resumed run would load as complete."""
    staging = folder.with_name(f".{folder.name}.staging")
    if create:
        shutil.rmtree(staging, ignore_errors=True)
    return staging


def build_vlm(config: VLMConfig, tokenizer: Any, seed: int) -> VLM:
    from ssmvlm.backbones import create_vision_backbone

    backbone = create_vision_backbone(
        config.backbone,
        checkpoint=config.checkpoint,
        image_size=config.image_size,
        feature_tap=config.feature_tap,
        resize_strategy=config.resize_strategy,
    )
    llm = build_llm(config, tokenizer, seed)
    grid = _token_grid(backbone, config.image_size) if config.token_pool > 1 else None
    connector = build_connector(
        config.connector,
        backbone.embed_dim,
        llm.config.hidden_size,
        pool=config.token_pool,
        grid_hw=grid,
        input_norm=config.connector_norm,
    ).to(DTYPES[config.llm_dtype])
    return VLM(
        backbone,
        connector,
        llm,
        tokenizer,
        get_prompt_format(config.prompt_format),
        vision_dtype=DTYPES[config.vision_dtype],
        image_position=config.image_position,
        box_frame=config.box_frame,
    )


def build_llm(config: VLMConfig, tokenizer: Any, seed: int) -> nn.Module:
    """The VLM's language model: a tiny preset at random weights (drawn from ``seed``) or a local model."""
    if is_tiny_preset(config.llm):
        llm = build_tiny_llm(config.llm, tokenizer, seed, config.tie_word_embeddings, config.llm_init_std)
        llm = llm.to(DTYPES[config.llm_dtype])
    else:
        llm = load_local_llm(Path(config.llm), tokenizer, DTYPES[config.llm_dtype])
    check_vocab_fits(tokenizer, llm, f"model.llm={config.llm}")
    return llm


def _token_grid(backbone: Any, image_size: int | tuple[int, int]) -> tuple[int, int]:
    info = backbone.tap_info(backbone.feature_tap)
    height, width = as_height_width(image_size)
    if info.extra_tokens:
        raise CheckpointError(f"{backbone.name}: token pooling needs a tap without class tokens")
    return -(-height // info.stride), -(-width // info.stride)


def trainable_state(vlm: VLM, names: Iterable[str]) -> dict[str, torch.Tensor]:
    state = vlm.state_dict()
    return {name: state[name].detach().cpu().contiguous() for name in names}


def load_trained_weights(vlm: VLM, path: Path) -> None:
    """Load ``model.safetensors`` into ``vlm``; every tensor must exist there with the same shape."""
    from ssmvlm.utils.io import load_state_dict

    weights = load_state_dict(path)
    own = vlm.state_dict()
    unknown = [k for k in weights if k not in own]
    wrong = [k for k in weights if k in own and own[k].shape != weights[k].shape]
    if unknown or wrong:
        example = unknown[:2] or [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:2]]
        raise CheckpointError(
            f"{path}: checkpoint of another architecture ({len(unknown)} unknown tensors, {len(wrong)} of "
            f"another shape, e.g. {example})"
        )
    if not any(k.startswith("connector.") for k in weights):
        raise CheckpointError(f"{path}: holds no connector weights")
    vlm.load_state_dict(weights, strict=False)


def encoder_digest(vlm: VLM) -> str:
    """sha256 over the frozen encoder's state dict: every tensor's name, dtype, shape and bytes, by name.

    ``model.safetensors`` leaves the encoder out (it is rebuilt from a zoo name such as ``vit_nano@shapes-cls``),
    so a re-registered initialization under the same name would silently change a trained run; the digest
    recorded at training time catches that at load.
    """
    return backbone_digest(vlm.vision_backbone)


def backbone_digest(backbone: torch.nn.Module) -> str:
    """:func:`encoder_digest` of a backbone on its own (a converted run records its encoder before any VLM)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encoder_record(config: VLMConfig, vlm: VLM) -> dict[str, Any]:
    return {"backbone": config.backbone, "checkpoint": config.checkpoint, "sha256": encoder_digest(vlm)}


def check_encoder(run_dir: Path, actual: str) -> None:
    """Refuse a run whose recorded encoder hash differs from ``actual``, the digest of the encoder just built
    (runs from before the hash was recorded have no ``encoder.json`` and load as they are)."""
    path = Path(run_dir) / ENCODER_FILE
    if not path.is_file():
        return
    recorded = read_json(path)
    expected = recorded.get("sha256") if isinstance(recorded, dict) else None
    if expected != actual:
        name = recorded.get("backbone") if isinstance(recorded, dict) else "?"
        raise CheckpointError(
            f"{path}: the run was trained with encoder weights sha256 {str(expected)[:12]}…, but {name} now "
            f"resolves to {actual[:12]}… (an initialization re-registered or a checkpoint replaced); restore "
            "those weights or train a new run"
        )


def load_vlm(run_dir: str | Path, device: str | torch.device | None = None) -> VLM:
    """A trained VLM from its run directory, in eval mode on ``device`` (default: CUDA when available)."""
    run_dir = Path(run_dir)
    saved = read_json(run_dir / CONFIG_FILE)
    config = from_dict(VLMConfig, saved.get("model", {}), path="model")
    if not is_tiny_preset(config.llm) and not Path(config.llm).is_absolute() and (run_dir / config.llm).is_dir():
        config.llm = str(run_dir / config.llm)  # a folder inside the run (a converted run's llm/), so it can move
    seed = int(saved.get("seed", 0))
    # Training seeds torch right before it builds the model, and an encoder without a checkpoint (a random
    # initialization) comes from that stream: rebuild it from the same seed, leaving the caller's RNG alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = prepare_tokenizer(config, run_dir)
        vlm = build_vlm(config, tokenizer, seed)
    if not (run_dir / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{run_dir / WEIGHTS_FILE}: trained weights not found (did the run finish?)")
    load_trained_weights(vlm, run_dir / WEIGHTS_FILE)
    check_encoder(run_dir, encoder_digest(vlm))
    return vlm.to(resolve_device(device)).eval()
