"""Read and write the run folders of the paper's release and of prismatic-vlms.

Both write one layout: ``config.json`` (its ``"model"`` names the encoder, the LLM, the connector
(``arch_specifier``), the resize strategy and ``llm_max_length``; the release adds ``vmamba_feature_stage`` /
``vmamba_feature_layer``) and ``checkpoints/latest-checkpoint.pt``, whose ``["model"]`` holds the trained
modules only: ``"projector"`` (``projector.0.*``/``projector.2.*`` for ``gelu-mlp``, 0/2/4 for
``fused-gelu-mlp``, ``projector.weight``/``.bias`` for ``linear``) and ``"llm_backbone"`` (the
``LlamaForCausalLM`` under ``llm.``). The encoder's weights are not inside: each encoder loads its upstream file.

An ssmvlm run folder holds ``config.json`` (``"model"``: a :class:`~ssmvlm.vlm.VLMConfig`), ``model.safetensors``
(``connector.projector.*`` and ``llm.*``: the VLM's own names for the same modules), ``tokenizer/`` and, for a
converted run, ``llm/`` (the LLM's Hugging Face config; its weights are all in ``model.safetensors``).

The LLM's tokenizer gets ``<PAD>`` as prismatic gives it (always: a tokenizer with another pad token still gets
``<PAD>`` added and made the pad token), and the embeddings have ``len(tokenizer)`` rows rounded up to a
multiple of 64 (32064 for Vicuna v1.5). Every tensor's name and shape is checked before anything is written;
the tensors are copied as they are, so a round trip is bitwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssmvlm.config import from_dict, to_dict
from ssmvlm.convert.ids import (
    ENCODER_IDS,
    LLM_PROMPT_FORMATS,
    NO_ALIGN,
    PUBLIC_IDS,
    VMAMBA_LAYER_KEY,
    VMAMBA_STAGE_KEY,
    EncoderId,
    connector_for,
)
from ssmvlm.utils.errors import CheckpointError, ConfigError, DataError
from ssmvlm.utils.io import atomic_write_bytes, atomic_write_json, load_state_dict, read_json
from ssmvlm.utils.provenance import write_run_record
from ssmvlm.vlm.builder import CONFIG_FILE, ENCODER_FILE, TOKENIZER_DIR, WEIGHTS_FILE, backbone_digest
from ssmvlm.vlm.llm import EMBEDDING_MULTIPLE

CHECKPOINT = Path("checkpoints") / "latest-checkpoint.pt"
# What ``python -m ssmvlm.utils.convert_checkpoint`` writes from a .pt that holds pickled objects.
CONVERTED_CHECKPOINT = CHECKPOINT.with_suffix(".safetensors")
LLM_DIR = "llm"
LLM_CONFIG_FILES = ("config.json", "generation_config.json")
SOURCE_KEY = "converted_from"  # config.json: the source folder's format, path and original config
PAD_TOKEN = "<PAD>"
MODULES = ("projector", "llm_backbone")
PROJECTOR = "projector."
CONNECTOR = "connector.projector."
LLM = "llm."
REQUIRED_FIELDS = ("model_id", "arch_specifier", "vision_backbone_id", "llm_backbone_id", "image_resize_strategy")
DTYPE_NAMES = {torch.bfloat16: "bfloat16"}  # float32 and float16 tensors load exactly into float32 parameters


@dataclass
class ConvertResult:
    """Where the converted folder is, and what the user should know about it."""

    path: Path
    warnings: list[str] = field(default_factory=list)


# -- reading a release / prismatic folder ----------------------------------------------------------------------
def release_root(src: Path) -> Path:
    """``src``, or its one subfolder when an archive was extracted with a root folder (as the release's own
    downloader accepts)."""
    if (src / CONFIG_FILE).is_file() or not src.is_dir():
        return src
    inner = [child for child in src.iterdir() if child.is_dir() and (child / CONFIG_FILE).is_file()]
    return inner[0] if len(inner) == 1 else src


def read_release_config(src: Path) -> dict[str, Any]:
    """``SRC/config.json``, checked to have the ``"model"`` fields a conversion needs."""
    path = src / CONFIG_FILE
    config = read_json(path)
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise DataError(path, "expected a 'model' mapping (a release or prismatic run config)", field="model")
    for key in REQUIRED_FIELDS:
        if not isinstance(model.get(key), str):
            raise DataError(path, "missing, or not a string", field=f"model.{key}")
    return config


def read_release_checkpoint(src: Path) -> tuple[dict[str, dict[str, torch.Tensor]], Path]:
    """The ``projector`` and ``llm_backbone`` state dicts of ``SRC/checkpoints``, read without unpickling.

    ``latest-checkpoint.pt`` is read with ``torch.load(weights_only=True)``; one that holds pickled objects is
    refused with the command that converts it (once, where the user trusts it) to ``latest-checkpoint.safetensors``
    (``projector.*`` / ``llm_backbone.*`` keys), which is read instead when present.
    """
    converted = src / CONVERTED_CHECKPOINT
    if converted.is_file():
        modules: dict[str, dict[str, torch.Tensor]] = {name: {} for name in MODULES}
        for key, value in load_state_dict(converted).items():
            module, _, inner = key.partition(".")
            if module not in modules:
                raise CheckpointError(f"{converted}: tensor {key!r} belongs to neither {' nor '.join(MODULES)}")
            modules[module][inner] = value
        return modules, converted
    path = src / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (a release/prismatic run folder has one)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for what it refuses
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: holds pickled Python objects that are not loaded for safety; convert it once in an "
                f"environment you trust with: python -m ssmvlm.utils.convert_checkpoint {path} {converted}"
            ) from None
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__})") from None
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict) or any(not isinstance(model.get(name), dict) for name in MODULES):
        found = list(model) if isinstance(model, dict) else list(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected ['model']['projector'] and ['model']['llm_backbone'], found {found}")
    if extra := sorted(set(model) - set(MODULES)):
        # e.g. prismatic's full-finetune stage also saves "vision_backbone": ssmvlm's encoder is the frozen zoo one
        raise CheckpointError(f"{path}: ['model'] also holds {extra}; only frozen-encoder runs convert")
    for name in MODULES:
        if not all(isinstance(v, torch.Tensor) for v in model[name].values()):
            raise CheckpointError(f"{path}: ['model'][{name!r}] holds something other than tensors")
    return {name: dict(model[name]) for name in MODULES}, path


def resolve_encoder(config: dict[str, Any], path: Path) -> tuple[EncoderId, str]:
    """The encoder id of a source config and the ssmvlm tap it reads (the VMamba stage/layer fields applied)."""
    model = config["model"]
    vision_id = model["vision_backbone_id"]
    # the config's id, or the release's public model id of the same encoder (vit-s-in1k-224 for in1k-vit-s)
    entry = ENCODER_IDS.get(vision_id) or ENCODER_IDS.get(PUBLIC_IDS.get(vision_id, ""))
    if entry is None:
        raise DataError(
            path, f"unknown encoder {vision_id!r} (released models: {', '.join(sorted(PUBLIC_IDS))}; see "
            "docs/backbones.md for every id)", field="model.vision_backbone_id",
        )  # fmt: skip

    def field_value(key: str) -> int | None:
        value = model.get(key, config.get(key))
        if value is not None and not isinstance(value, int):
            raise DataError(path, f"expected an integer, got {value!r}", field=key)
        return value

    try:
        return entry, entry.tap(field_value(VMAMBA_STAGE_KEY), field_value(VMAMBA_LAYER_KEY))
    except ValueError as exc:
        raise DataError(path, str(exc), field=f"model.{VMAMBA_STAGE_KEY}") from None


def resize_strategy_for(entry: EncoderId, strategy: str, path: Path) -> str:
    """ssmvlm's resize strategy for the source's ``image_resize_strategy`` on this encoder."""
    if strategy == "letterbox":
        return entry.letterbox
    # prismatic's resize-naive (a plain square resize) and, for its timm encoders, resize-crop (crop_pct 1) are
    # ssmvlm's; the release's dense encoders (and their own crop settings) have only their letterbox here.
    allowed = {"resize-naive"} if entry.letterbox == "letterbox" else set()
    if entry.source == "prismatic":
        allowed.add("resize-crop")
    if strategy not in allowed:
        raise DataError(
            path, f"{strategy!r} for {entry.vision_backbone_id} has no ssmvlm equivalent "
            f"(allowed: {', '.join(sorted(allowed | {'letterbox'}))})", field="model.image_resize_strategy",
        )  # fmt: skip
    return strategy


def _meta_backbone(name: str, image_size: int | tuple[int, int], feature_tap: str) -> Any:
    """The zoo backbone built without weight memory (for widths and token counts)."""
    from ssmvlm.backbones import create_vision_backbone

    try:
        with torch.device("meta"):
            return create_vision_backbone(name, image_size=image_size, feature_tap=feature_tap)
    except (NotImplementedError, RuntimeError):  # an init that reads tensor data: build it for real
        return create_vision_backbone(name, image_size=image_size, feature_tap=feature_tap)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def release_tokenizer(llm_dir: Path) -> Any:
    """The LLM's tokenizer as prismatic prepares it: ``<PAD>`` added (idempotently) and made the pad token."""
    from transformers import AutoTokenizer

    if not (llm_dir / "tokenizer_config.json").is_file() and not (llm_dir / "tokenizer.json").is_file():
        raise ConfigError("--llm", f"{llm_dir} holds no Hugging Face tokenizer (tokenizer_config.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True)
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "right"
    return tokenizer


def expected_llm_shapes(llm_dir: Path, vocab_rows: int) -> tuple[dict[str, tuple[int, ...]], int, set[str]]:
    """Shapes of every ``llm.*`` tensor for the LLM of ``llm_dir`` with ``vocab_rows`` embedding rows, its
    hidden size, and the names of the vocabulary-sized tensors."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (llm_dir / "config.json").is_file():
        raise ConfigError("--llm", f"{llm_dir} holds no Hugging Face model config (config.json)")
    hf_config = AutoConfig.from_pretrained(str(llm_dir), local_files_only=True)
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(hf_config)
    vocab = {id(llm.get_input_embeddings().weight)}
    if llm.get_output_embeddings() is not None:
        vocab.add(id(llm.get_output_embeddings().weight))
    names = {name for name, p in llm.named_parameters(remove_duplicate=False) if id(p) in vocab}
    shapes = {LLM + name: tuple(value.shape) for name, value in llm.state_dict().items()}
    for name in names:
        shapes[LLM + name] = (vocab_rows, *shapes[LLM + name][1:])
    return shapes, int(llm.get_input_embeddings().weight.shape[1]), {LLM + name for name in names}


def check_shapes(
    tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], where: str, what: str
) -> None:
    """Every expected tensor present with its shape, nothing else; else a one-line CheckpointError."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} (expected {expected[k]})" for k in sorted(expected)
             if k in tensors and tuple(tensors[k].shape) != expected[k]]  # fmt: skip
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{where}: does not fit {what}: {len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} "
            f"unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})"
        )


def projector_to_connector(projector: dict[str, torch.Tensor], connector: str) -> dict[str, torch.Tensor]:
    """prismatic projector names → the VLM's (``projector.weight`` of ``linear`` is the one-layer ``0``)."""
    renamed = {}
    for key, value in projector.items():
        inner = key.removeprefix(PROJECTOR)
        renamed[CONNECTOR + (f"0.{inner}" if connector == "linear" else inner)] = value
    return renamed


def connector_to_projector(weights: dict[str, torch.Tensor], connector: str) -> dict[str, torch.Tensor]:
    projector = {}
    for key, value in weights.items():
        if key.startswith(CONNECTOR):
            inner = key.removeprefix(CONNECTOR)
            projector[PROJECTOR + (inner.removeprefix("0.") if connector == "linear" else inner)] = value
    return projector


def expected_connector_shapes(connector: str, vision_dim: int, llm_dim: int) -> dict[str, tuple[int, ...]]:
    from ssmvlm.connectors import build_connector

    with torch.device("meta"):
        module = build_connector(connector, vision_dim, llm_dim)
    return {f"connector.{key}": tuple(value.shape) for key, value in module.state_dict().items()}


def from_release(
    src: str | Path, out: str | Path, *, llm_dir: str | Path, vision_checkpoint: str | Path | None = None
) -> ConvertResult:
    """Convert a release or prismatic run folder ``src`` into an ssmvlm run folder ``out``.

    ``llm_dir``: a local Hugging Face folder with the LLM's config and tokenizer (weights, if any, are not read:
    they come from the checkpoint). ``vision_checkpoint``: the encoder's upstream weights, loaded strictly once
    here so that a file for another architecture or tap fails now; without it the run uses the zoo's random
    initialization (a warning says so).
    """
    from ssmvlm.vlm.builder import VLMConfig

    src, out, llm_dir = release_root(Path(src)), Path(out), Path(llm_dir)
    config_path = src / CONFIG_FILE
    config = read_release_config(src)
    model = config["model"]
    entry, tap = resolve_encoder(config, config_path)
    resize = resize_strategy_for(entry, model["image_resize_strategy"], config_path)
    connector = connector_for(model["arch_specifier"])
    if connector is None:
        raise DataError(config_path, f"unknown arch_specifier {model['arch_specifier']!r} (allowed: "
                        "[no-align+]linear, [no-align+]gelu-mlp, [no-align+]fused-gelu-mlp)",
                        field="model.arch_specifier")  # fmt: skip
    prompt_format = LLM_PROMPT_FORMATS.get(model["llm_backbone_id"])
    if prompt_format is None:
        raise DataError(config_path, f"LLM {model['llm_backbone_id']!r} has no ssmvlm prompt format (allowed: "
                        f"{', '.join(LLM_PROMPT_FORMATS)})", field="model.llm_backbone_id")  # fmt: skip
    modules, checkpoint_path = read_release_checkpoint(src)

    tokenizer = release_tokenizer(llm_dir)
    rows = _round_up(len(tokenizer), EMBEDDING_MULTIPLE)
    llm_shapes, llm_dim, vocab_keys = expected_llm_shapes(llm_dir, rows)
    llm = modules["llm_backbone"]
    for key in sorted(vocab_keys & set(llm)):
        if llm[key].shape[0] != rows:
            raise CheckpointError(
                f"{checkpoint_path}: {key} has {llm[key].shape[0]} rows, but {llm_dir}'s tokenizer with {PAD_TOKEN} "
                f"has {len(tokenizer)} tokens, padded to a multiple of {EMBEDDING_MULTIPLE}: {rows} (another LLM?)"
            )
    check_shapes(llm, llm_shapes, str(checkpoint_path), f"the LLM of {llm_dir} (['model']['llm_backbone'])")

    backbone = _meta_backbone(entry.backbone, entry.image_size, tap)
    weights = projector_to_connector(modules["projector"], connector)
    what = (f"{model['arch_specifier']} from {backbone.embed_dim}-d tokens ({entry.backbone} tap {tap}) to the "
            f"{llm_dim}-d LLM (['model']['projector']); a checkpoint of another encoder, tap or LLM")  # fmt: skip
    check_shapes(weights, expected_connector_shapes(connector, backbone.embed_dim, llm_dim), str(checkpoint_path),
                 what)  # fmt: skip
    weights.update(llm)

    warnings = []
    encoder_record = None
    if vision_checkpoint is not None:
        from ssmvlm.backbones import create_vision_backbone

        # absolute, so the run loads from anywhere; a fused pair names two files, DINO_FILE,SIGLIP_FILE
        vision_checkpoint = ",".join(str(Path(part.strip()).resolve()) for part in str(vision_checkpoint).split(","))
        encoder = create_vision_backbone(  # loads strictly: a file for another architecture or tap fails here
            entry.backbone, checkpoint=vision_checkpoint, image_size=entry.image_size, feature_tap=tap
        )
        # recorded as training records it, so a replaced encoder file is refused at load, not run silently
        encoder_record = {"backbone": entry.backbone, "checkpoint": vision_checkpoint,
                          "sha256": backbone_digest(encoder)}  # fmt: skip
    else:
        warnings.append(
            f"no --vision-checkpoint: {entry.backbone} keeps the zoo's random initialization; pass the encoder's "
            "upstream weights for meaningful outputs"
        )
    vlm_config = VLMConfig(
        backbone=entry.backbone,
        checkpoint=vision_checkpoint,
        image_size=entry.image_size,
        resize_strategy=resize,  # type: ignore[arg-type]
        feature_tap=tap,
        connector=connector,  # type: ignore[arg-type]
        llm=LLM_DIR,
        llm_dtype=DTYPE_NAMES.get(llm[sorted(vocab_keys)[0]].dtype, "float32"),  # type: ignore[arg-type]
        prompt_format=prompt_format,  # type: ignore[arg-type]
        max_length=int(model.get("llm_max_length", 2048)),
    )
    run_config = {
        "seed": 0,
        "model": to_dict(vlm_config),
        SOURCE_KEY: {"format": entry.source, "path": str(src.resolve()), "checkpoint": checkpoint_path.name,
                     "config": config},
    }  # fmt: skip
    _write_run(out, weights, tokenizer, llm_dir, run_config)
    if encoder_record is not None:
        atomic_write_json(out / ENCODER_FILE, encoder_record)
    return ConvertResult(out, warnings)


def _write_run(
    out: Path, weights: dict[str, torch.Tensor], tokenizer: Any, llm_dir: Path, run_config: dict[str, Any]
) -> None:
    from safetensors.torch import save_file

    if (out / CONFIG_FILE).exists():
        raise ConfigError("--out", f"{out} already holds a run (config.json); choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    with _atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file({key: value.contiguous() for key, value in weights.items()}, str(tmp))
    with _atomic_path(out / TOKENIZER_DIR, directory=True) as tmp:
        tokenizer.save_pretrained(str(tmp))
    for name in LLM_CONFIG_FILES:
        if (llm_dir / name).is_file():
            atomic_write_bytes(out / LLM_DIR / name, (llm_dir / name).read_bytes())
    atomic_write_json(out / CONFIG_FILE, run_config)
    write_run_record(out, run_config, seed=run_config["seed"])


@contextlib.contextmanager
def _atomic_path(path: Path, *, directory: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it once written (as ``atomic_write_bytes`` does, for
    files of many GB that should not be held in memory as bytes, and for folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    else:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


# -- writing an ssmvlm run in the release layout ----------------------------------------------------------------
def _encoder_id_for(config: Any, preferred: str | None) -> tuple[EncoderId, dict[str, int]]:
    """The encoder id that reads the run's features (the source's id first), with its VMamba fields."""
    candidates = [ENCODER_IDS[preferred]] if preferred in ENCODER_IDS else []
    candidates += [e for e in ENCODER_IDS.values() if e.vision_backbone_id != preferred]
    tap = config.feature_tap or _default_tap(config.backbone)
    size = tuple(config.image_size) if isinstance(config.image_size, list | tuple) else config.image_size
    for entry in candidates:
        fields = entry.tap_fields(tap) if entry.backbone == config.backbone and entry.image_size == size else None
        if fields is not None and config.resize_strategy in _release_strategies(entry):
            return entry, fields
    raise ConfigError(
        "model", f"{config.backbone} tap {tap} at {size} with {config.resize_strategy} has no release or prismatic "
        "id: neither reads features there (see docs/backbones.md for the ids and their taps)"
    )  # fmt: skip


def _default_tap(backbone: str) -> str:
    from ssmvlm.backbones.zoo import get_backbone_entry

    return get_backbone_entry(backbone).spec.default_tap


def _release_strategies(entry: EncoderId) -> dict[str, str]:
    """ssmvlm strategy → the source's ``image_resize_strategy`` on this encoder."""
    strategies = {entry.letterbox: "letterbox"}
    if entry.letterbox == "letterbox":
        strategies["resize-naive"] = "resize-naive"
    if entry.source == "prismatic":
        strategies["resize-crop"] = "resize-crop"
    return strategies


def to_release(
    run: str | Path, out: str | Path, *, llm_backbone_id: str | None = None, model_id: str | None = None
) -> ConvertResult:
    """Write the ssmvlm run ``run`` as a release/prismatic run folder ``out``.

    The encoder, tap, size and resize strategy must be one a release/prismatic id reads; ``llm_backbone_id``
    (default: the converted source's) names the LLM for prismatic's loader; the embeddings must have the rows
    prismatic gives that tokenizer (``<PAD>`` added, a multiple of 64).
    """
    from ssmvlm.vlm.builder import VLMConfig

    run, out = Path(run), Path(out)
    saved = read_json(run / CONFIG_FILE)
    config = from_dict(VLMConfig, saved.get("model", {}), path="model")
    source = saved.get(SOURCE_KEY) if isinstance(saved.get(SOURCE_KEY), dict) else {}
    source_config = dict(source.get("config") or {})
    source_model = dict(source_config.get("model") or {})
    if config.token_pool != 1:
        raise ConfigError("model.token_pool", "a pooled run has no release form (the release projects every token)")
    entry, tap_fields = _encoder_id_for(config, source_model.get("vision_backbone_id"))
    llm_id = llm_backbone_id or source_model.get("llm_backbone_id")
    if llm_id is None:
        raise ConfigError("--llm-backbone-id", f"{run} was not converted from a release; name its LLM's prismatic id",
                          allowed=sorted(LLM_PROMPT_FORMATS))  # fmt: skip
    if LLM_PROMPT_FORMATS.get(llm_id) != config.prompt_format:
        raise ConfigError("--llm-backbone-id", f"{llm_id!r} prompts in another format than the run's "
                          f"{config.prompt_format!r}", allowed=sorted(LLM_PROMPT_FORMATS))  # fmt: skip
    arch = source_model.get("arch_specifier")
    if arch is None or connector_for(arch) != config.connector:
        arch = NO_ALIGN + config.connector  # ssmvlm trains the connector with the LLM in one stage

    weights = load_state_dict(run / WEIGHTS_FILE)
    projector = connector_to_projector(weights, config.connector)
    if not projector:
        raise CheckpointError(f"{run / WEIGHTS_FILE}: holds no connector weights")
    llm = {key: value for key, value in weights.items() if key.startswith(LLM)}
    if not llm:  # the LLM was frozen in training: its weights are the base LLM's
        from ssmvlm.vlm.builder import load_vlm
        from ssmvlm.vlm.llm import HF_WEIGHT_FILES, is_tiny_preset

        base = run / config.llm if (run / config.llm).is_dir() else Path(config.llm)
        if not is_tiny_preset(config.llm) and not any((base / name).is_file() for name in HF_WEIGHT_FILES):
            # its LLM would be a fresh initialization from the config alone, not the weights the run used
            raise CheckpointError(f"{run / WEIGHTS_FILE}: holds no LLM weights, and {base} has none either")
        llm = {k: v for k, v in load_vlm(run, device="cpu").state_dict().items() if k.startswith(LLM)}
    _check_release_vocab(run, llm)

    fields = {
        "model_id": model_id or source_model.get("model_id") or f"ssmvlm-{run.resolve().name}",
        "arch_specifier": arch,
        "vision_backbone_id": entry.vision_backbone_id,
        "llm_backbone_id": llm_id,
        "image_resize_strategy": _release_strategies(entry)[config.resize_strategy],
        "llm_max_length": config.max_length,
    }
    for key in (VMAMBA_STAGE_KEY, VMAMBA_LAYER_KEY):
        source_model.pop(key, None)
        if key in tap_fields:
            # the release reads these from "model" or the top level; keep the source's place
            (source_config if key in source_config else fields)[key] = tap_fields[key]
        else:
            source_config.pop(key, None)
    source_config["model"] = {**source_model, **fields}
    if (out / CONFIG_FILE).exists():
        raise ConfigError("DST", f"{out} already holds a run (config.json); choose an empty folder")
    with _atomic_path(out / CHECKPOINT) as tmp:
        torch.save({"model": {"projector": projector, "llm_backbone": llm}}, str(tmp))
    atomic_write_json(out / CONFIG_FILE, source_config)
    return ConvertResult(out)


def _check_release_vocab(run: Path, llm: dict[str, torch.Tensor]) -> None:
    """prismatic's loader adds ``<PAD>`` to the LLM's tokenizer and pads the embeddings to a multiple of 64."""
    from ssmvlm.vlm.llm import load_tokenizer

    tokenizer = load_tokenizer(run / TOKENIZER_DIR)
    count = len(tokenizer) + (0 if PAD_TOKEN in tokenizer.get_vocab() else 1)
    rows = _round_up(count, EMBEDDING_MULTIPLE)
    embed = next((key for key in llm if key.endswith("embed_tokens.weight")), None)
    if embed is not None and llm[embed].shape[0] != rows:
        raise CheckpointError(
            f"{run}: {embed} has {llm[embed].shape[0]} rows, but prismatic's loader gives this tokenizer "
            f"({count} tokens with {PAD_TOKEN}) {rows} rows; the release cannot load it"
        )
