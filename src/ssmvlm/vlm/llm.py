"""Language models: local Hugging Face directories, or tiny Llama presets built from a seed with a tokenizer.

No download ever happens: a local directory is opened with ``local_files_only=True``, and a tiny preset is a
``LlamaConfig`` randomly initialized from the run seed, with a byte-level BPE tokenizer trained with
``tokenizers`` on the training text and saved beside the run in Hugging Face format.

Special tokens follow the Llama convention the prompt formats assume: ``<s>`` (BOS, added by the tokenizer),
``</s>`` (EOS, closes every answer), plus ``<pad>``. As in prismatic-vlms, a pad token is added to a local
tokenizer that lacks one, and the embeddings are resized to a multiple of 64.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssmvlm.utils.errors import CheckpointError, ConfigError

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
EMBEDDING_MULTIPLE = 64


@dataclass(frozen=True)
class TinyLlamaPreset:
    """A Llama shape trained from scratch; ``vocab_size`` is the tokenizer's target size."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int = 2048


TINY_LLAMA_PRESETS: dict[str, TinyLlamaPreset] = {
    "tiny-llama-2m": TinyLlamaPreset(128, 8, 4, 4, 344, 1024),
    # Half the depth of tiny-llama-2m: twice the optimizer steps per CPU second, which a from-scratch LM on
    # ShapeScenes needs more than depth (the `quick` study's LLM).
    "tiny-llama-1m": TinyLlamaPreset(128, 4, 4, 4, 344, 1024),
    # Two layers of tiny-llama-2m's width: given the scenes' ground truth as the image, it localized far better than
    # eight layers at the same steps (benchmarks/RESULTS.md, "Probe 10").
    "tiny-llama-2l": TinyLlamaPreset(128, 2, 4, 4, 344, 1024),
    "tiny-llama-10m": TinyLlamaPreset(256, 8, 8, 8, 688, 4096),
    # The TinyLlama-1.1B shape, randomly initialized (throughput benchmarks, scale-out tests).
    "tinyllama-1b-shape": TinyLlamaPreset(2048, 22, 32, 4, 5632, 32000),
}


def is_tiny_preset(name: str) -> bool:
    return name in TINY_LLAMA_PRESETS


def llama_config(
    preset: TinyLlamaPreset, vocab_size: int, tie_word_embeddings: bool = False, init_std: float | None = None
) -> Any:
    """``init_std``: the std of every weight matrix at initialization (None: Hugging Face Llama's 0.02)."""
    from transformers import LlamaConfig

    extra = {} if init_std is None else {"initializer_range": init_std}
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        max_position_embeddings=preset.max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        **extra,
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path, lowercase: bool = False) -> Any:
    """Train a byte-level BPE on ``texts`` and save it in Hugging Face format in ``out_dir``.

    Every turn is tokenized separately during training (loss masking), with a prefix space, so an answer
    tokenized alone starts with the same token the model emits after ``ASSISTANT:`` at inference.
    ``lowercase``: text is lowercased before it is split (the normalizer is saved with the tokenizer), so an
    answer's word ("Red") and the same word in a question ("a red circle") are one token.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, UNK],  # ids 0..3, matching llama_config's bos/eos/pad ids
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: tokenizer directory not found")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    tokenizer.padding_side = "right"
    return tokenizer


def build_tiny_llm(
    name: str, tokenizer: Any, seed: int, tie_word_embeddings: bool = False, init_std: float | None = None
) -> nn.Module:
    """A randomly initialized Llama of preset ``name``, embeddings sized to the tokenizer (multiple of 64);
    ``tie_word_embeddings``: the LM head is the input embedding; ``init_std``: see :func:`llama_config`."""
    from transformers import LlamaForCausalLM

    if name not in TINY_LLAMA_PRESETS:
        raise ConfigError("model.llm", f"unknown LLM preset {name!r}", allowed=sorted(TINY_LLAMA_PRESETS))
    if init_std is not None and not init_std > 0:
        raise ConfigError("model.llm_init_std", f"expected a positive standard deviation, got {init_std}")
    vocab = _round_up(len(tokenizer), EMBEDDING_MULTIPLE)
    config = llama_config(TINY_LLAMA_PRESETS[name], vocab, tie_word_embeddings, init_std)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


# Files that hold a Hugging Face model's weights; a directory with none of them holds only its config.
HF_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)


def load_local_llm(path: Path, tokenizer: Any, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Any local ``AutoModelForCausalLM`` directory; embeddings grown to fit an added pad token.

    A directory with a config but no weights (a converted run's ``llm/``, whose weights are all in the run's
    ``model.safetensors``) gives the architecture with its initial weights.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if not Path(path).is_dir():
        raise ConfigError(
            "model.llm",
            f"{path} is neither an LLM preset nor a local model directory",
            allowed=sorted(TINY_LLAMA_PRESETS),
        )
    if any((Path(path) / name).is_file() for name in HF_WEIGHT_FILES):
        llm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    else:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        llm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if len(tokenizer) > llm.get_input_embeddings().weight.shape[0]:
        llm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=EMBEDDING_MULTIPLE)
    return llm


def check_vocab_fits(tokenizer: Any, llm: nn.Module, where: str) -> None:
    rows = llm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise CheckpointError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the LLM embeds only {rows}; "
            "they do not belong together"
        )


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple
