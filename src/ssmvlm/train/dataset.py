"""Tokenization with prismatic-vlms' loss masking, the per-image feature source, the sampler and collation.

Masking (``prismatic/preprocessing/datasets/datasets.py``): every turn is wrapped by the prompt format,
rstripped and tokenized on its own, only the first with special tokens (BOS); human-turn tokens get label
-100, answer tokens (with their ``</s>``) are supervised; the text is truncated to ``max_length``; for an
image sample ``labels[0]`` (BOS) is -100 too. The align stage trains on ``BOS caption </s>`` with BOS masked.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssmvlm.data.llava import LlavaRecord
from ssmvlm.utils.device import to_device_async
from ssmvlm.utils.errors import DataError
from ssmvlm.vlm.model import IGNORE_INDEX
from ssmvlm.vlm.prompts import PromptFormat


@dataclass
class Sample:
    record_id: str
    input_ids: list[int]
    labels: list[int]
    image_index: int | None  # into ConversationData.image_paths

    @property
    def prompt_length(self) -> int:
        """Tokens before the first supervised one: the first user turn, BOS included (BOS alone in the align
        stage), where ``after-question`` puts the image. Every kept sample has a supervised token."""
        return next((i for i, label in enumerate(self.labels) if label != IGNORE_INDEX), len(self.labels))


@dataclass
class ConversationData:
    samples: list[Sample]
    image_paths: list[Path]
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)


def tokenize_conversation(
    turns: Sequence[tuple[str, str]],
    tokenizer: Any,
    prompt_format: PromptFormat,
    max_length: int,
    has_image: bool,
) -> tuple[list[int], list[int]]:
    input_ids: list[int] = []
    labels: list[int] = []
    for index, text in enumerate(prompt_format.turn_strings(list(turns))):
        ids = tokenizer(text.rstrip(), add_special_tokens=index == 0).input_ids
        input_ids += ids
        labels += [IGNORE_INDEX] * len(ids) if index % 2 == 0 else ids
    return _finish(input_ids, labels, max_length, has_image)


def tokenize_caption(
    turns: Sequence[tuple[str, str]],
    tokenizer: Any,
    prompt_format: PromptFormat,
    max_length: int,
    has_image: bool,
) -> tuple[list[int], list[int]]:
    """Align stage: the prompt is discarded and the last answer is the caption target."""
    ids = tokenizer(turns[-1][1].strip() + prompt_format.eos).input_ids
    return _finish(ids, list(ids), max_length, has_image)


def _finish(input_ids: list[int], labels: list[int], max_length: int, has_image: bool) -> tuple[list[int], list[int]]:
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if has_image and labels:
        labels[0] = IGNORE_INDEX
    return input_ids, labels


TOKENIZERS_BY_STAGE = {
    "no-align": tokenize_conversation,
    "finetune": tokenize_conversation,
    "align": tokenize_caption,
}


def split_into_turns(records: Sequence[LlavaRecord]) -> list[LlavaRecord]:
    """One record per human→gpt pair, each with the conversation's image (ids ``ID#k``)."""
    return [
        LlavaRecord(f"{record.id}#{k // 2}", record.image, list(record.turns[k : k + 2]))
        for record in records
        for k in range(0, len(record.turns), 2)
    ]


def build_conversation_data(
    records: Sequence[LlavaRecord],
    tokenizer: Any,
    prompt_format: PromptFormat,
    *,
    max_length: int,
    stage: str,
    source: str | Path,
    skip_bad: bool,
    split_turns: bool = False,
) -> ConversationData:
    """Tokenize every record; a record whose answers are fully truncated raises, or is counted and skipped."""
    tokenize = TOKENIZERS_BY_STAGE[stage]
    if split_turns:
        records = split_into_turns(records)
    image_index: dict[Path, int] = {}
    data = ConversationData([], [])
    for record in records:
        input_ids, labels = tokenize(record.turns, tokenizer, prompt_format, max_length, record.image is not None)
        if all(label == IGNORE_INDEX for label in labels):
            error = DataError(
                source,
                f"every answer token is cut off at max_length={max_length} (conversation has "
                f"{len(tokenize(record.turns, tokenizer, prompt_format, 10**9, False)[0])} tokens)",
                record=record.id,
                field="conversations",
            )
            if not skip_bad:
                raise error
            data.skipped += 1
            data.skip_reasons.append(str(error))
            continue
        index = None
        if record.image is not None:
            index = image_index.setdefault(record.image, len(image_index))
        data.samples.append(Sample(record.id, input_ids, labels, index))
    data.image_paths = list(image_index)
    return data


def drop_samples_with_images(data: ConversationData, bad_images: set[int]) -> None:
    """Remove samples whose image failed to decode (``--skip-bad``); counted as skips."""
    kept = [s for s in data.samples if s.image_index not in bad_images]
    data.skipped += len(data.samples) - len(kept)
    data.samples = kept


def global_batch_indices(num_samples: int, global_batch: int, step: int, steps_per_epoch: int, seed: int) -> list[int]:
    """The sample indices of optimizer step ``step``: a seeded permutation per epoch, the last batch of an
    epoch filled up from the epoch's start (as ``DistributedSampler`` pads), so every step is a full batch."""
    epoch, position = divmod(step, steps_per_epoch)
    order = _epoch_order(num_samples, epoch, seed)
    start = position * global_batch
    return [order[(start + offset) % num_samples] for offset in range(global_batch)]


@functools.lru_cache(maxsize=1)  # every step of an epoch reads the same permutation
def _epoch_order(num_samples: int, epoch: int, seed: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return tuple(torch.randperm(num_samples, generator=generator).tolist())


def rank_micro_batches(indices: list[int], rank: int, world_size: int, micro_batch: int) -> list[list[int]]:
    """Rank ``rank``'s micro-batches: contiguous chunks of the global batch, so N ranks see exactly the
    micro-batches one process would see with the same global batch (the loss is the same sum of means)."""
    chunks = [indices[i : i + micro_batch] for i in range(0, len(indices), micro_batch)]
    per_rank = len(chunks) // world_size
    return chunks[rank * per_rank : (rank + 1) * per_rank]


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    image_indices: list[int | None]
    record_ids: list[str]
    prompt_lengths: torch.Tensor
    padded: bool  # whether any row is shorter than the longest, known on the host

    @property
    def has_image(self) -> torch.Tensor:
        return torch.tensor([i is not None for i in self.image_indices], dtype=torch.bool)


# Token tables up to this size live on the training device, so a batch is gathered there from one small index copy.
DEVICE_TABLE_LIMIT_BYTES = 512 * 1024**2


class PackedSamples:
    """Every sample's tokens end to end in two flat tensors, so a batch is a few vectorized gathers.

    Building each batch row by row (a tensor per row and field) costs more host time per step than the study's
    tiny LLM takes for the whole step on a GPU. Batches are right-padded to their longest row (prismatic).
    """

    def __init__(self, samples: Sequence[Sample], pad_token_id: int, device: torch.device | None = None) -> None:
        self.samples = samples
        self.pad_token_id = pad_token_id
        self.lengths = torch.tensor([len(s.input_ids) for s in samples], dtype=torch.long)
        starts = torch.cumsum(self.lengths, 0) - self.lengths
        input_ids = torch.tensor([t for s in samples for t in s.input_ids], dtype=torch.int32)
        labels = torch.tensor([t for s in samples for t in s.labels], dtype=torch.int32)
        prompt_lengths = torch.tensor([s.prompt_length for s in samples], dtype=torch.long)
        table_bytes = 4 * 2 * len(input_ids)
        self.device = device if device is not None and table_bytes <= DEVICE_TABLE_LIMIT_BYTES else torch.device("cpu")
        self.input_ids, self.labels = input_ids.to(self.device), labels.to(self.device)
        self.starts, self.prompt_lengths = starts.to(self.device), prompt_lengths.to(self.device)
        self.device_lengths = self.lengths.to(self.device)

    def batch(self, indices: Sequence[int]) -> Batch:
        rows_host = torch.tensor(indices, dtype=torch.long)
        lengths = self.lengths[rows_host]
        longest = int(lengths.max())  # from the host's copy: no wait on the device
        rows = to_device_async(rows_host, self.device)
        offsets = torch.arange(longest, device=self.device)
        present = offsets[None] < self.device_lengths[rows, None]
        positions = torch.where(present, self.starts[rows, None] + offsets[None], 0)
        input_ids = torch.where(present, self.input_ids[positions], self.pad_token_id).long()
        labels = torch.where(present, self.labels[positions], IGNORE_INDEX).long()
        picked = [self.samples[i] for i in indices]
        return Batch(
            input_ids,
            present.long(),
            labels,
            [s.image_index for s in picked],
            [s.record_id for s in picked],
            self.prompt_lengths[rows],
            padded=bool((lengths < longest).any()),
        )


def collate(samples: Sequence[Sample], pad_token_id: int) -> Batch:
    """One right-padded batch of ``samples`` on the host (pad id / -100 / mask 0 after each sequence)."""
    return PackedSamples(samples, pad_token_id).batch(range(len(samples)))
