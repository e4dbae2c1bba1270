"""The VLM: frozen vision encoder → connector → LLM, with the patch embeddings spliced into the text.

Sequence layout (``image_position``):

- ``after-bos`` (prismatic-vlms, the default): ``[BOS, p_1 … p_K, text …]``;
- ``after-question``: ``[BOS, first user turn, p_1 … p_K, answer …]``. In a causal LM the patches then attend
  to the question, so each one can check itself against what is asked (the way FiLM conditions visual features
  on the question), instead of the answer position having to find the right patch by content alone; an LLM
  trained from scratch learns to bind a question to one of several objects far sooner this way (measured:
  benchmarks/RESULTS.md, "The signal probes").
- ``before-answer``: as ``after-question``, but the patches go before the first turn's answer tag (Vicuna's
  ``ASSISTANT:``), so the first answer token is read from a text position after the image, not from the last
  patch; a small from-scratch transformer learns yes/no answers about the image sooner that way (RESULTS.md,
  "What opens the image path").

The K patch positions are masked out of the loss. A text-only sample in a mixed batch gets K zero embeddings
appended at its end instead, with attention mask False and label -100, so its text keeps the positions it
would have alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ssmvlm.connectors import Connector
from ssmvlm.data.box_frames import BOX_FRAMES
from ssmvlm.ops.graphed import GraphedInference
from ssmvlm.utils.errors import ConfigError, DataError
from ssmvlm.vlm.prompts import PromptFormat

IGNORE_INDEX = -100
IMAGE_POSITIONS = ("after-bos", "after-question", "before-answer")


class VLM(nn.Module):
    def __init__(
        self,
        vision_backbone: nn.Module,
        connector: Connector,
        llm: nn.Module,
        tokenizer: Any,
        prompt_format: PromptFormat,
        *,
        vision_dtype: torch.dtype = torch.float32,
        encoder_cuda_graphs: bool | None = None,
        image_position: str = "after-bos",
        box_frame: str = "raw",
    ) -> None:
        super().__init__()
        if image_position not in IMAGE_POSITIONS:
            raise ConfigError(
                "model.image_position", f"unknown image position {image_position!r}", allowed=list(IMAGE_POSITIONS)
            )
        if box_frame not in BOX_FRAMES:
            raise ConfigError("model.box_frame", f"unknown box frame {box_frame!r}", allowed=list(BOX_FRAMES))
        self.box_frame = box_frame  # what its box answers are over, and so what evaluation scores by default
        self.image_position = image_position
        # The tokens every first user turn ends with, which ``before-answer`` puts after the patches.
        self.answer_tag = answer_tag_ids(tokenizer, prompt_format) if image_position == "before-answer" else []
        self.vision_backbone = vision_backbone
        self.connector = connector
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.vision_dtype = vision_dtype
        self.vision_backbone.to(dtype=vision_dtype)
        self.vision_backbone.requires_grad_(False)
        self.vision_backbone.eval()
        # In eval mode (inference) the encoder's calls replay CUDA graphs: not launch-bound at batch 1. None: on
        # unless SSMVLM_CUDA_GRAPHS=0; set ``encoder_graphs.enabled`` to change it later.
        self.encoder_graphs = GraphedInference(enabled=encoder_cuda_graphs)

    # -- the frozen encoder never leaves eval mode -------------------------------------------------------
    def train(self, mode: bool = True) -> VLM:
        super().train(mode)
        self.vision_backbone.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.connector.parameters()).device

    @property
    def image_transform(self) -> Any:
        return self.vision_backbone.image_transform

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen encoder tokens (B, N, D) in fp32 (what the feature cache stores); replayed from a CUDA graph in
        eval mode (:mod:`ssmvlm.ops.graphed`)."""
        pixels = pixel_values.to(self.vision_dtype)
        if self.training:
            return self.vision_backbone(pixels).float()
        return self.encoder_graphs(self.vision_backbone, pixels).float()

    def project(self, vision_features: torch.Tensor) -> torch.Tensor:
        weight = next(self.connector.parameters())
        return self.connector(vision_features.to(weight.dtype))

    # -- training forward ----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        prompt_lengths: torch.Tensor | None = None,
        loss_reduction: str = "token",
        padding: bool | None = None,
    ) -> Any:
        """Loss and logits for a right-padded batch; images as pixels or as cached encoder features.

        ``prompt_lengths``: tokens of each row's first user turn, BOS included (needed for ``after-question``).
        ``loss_reduction``: ``token`` averages the loss over every answer token of the batch (the LLM's own loss);
        ``sample`` averages each row's answer tokens first, then the rows; ``sqrt`` weighs each token of a row with n
        answer tokens by 1/sqrt(n) (``length_weighted_loss``).
        ``padding``: whether any row has padding (pads after its text, or a text-only row's masked patch slots), for
        a caller that knows it on the host; ``None`` lets transformers find out (``_llm_attention_mask``).
        """
        if vision_features is None and pixel_values is not None:
            vision_features = self.encode_images(pixel_values)
        embeds = self.llm.get_input_embeddings()(input_ids)
        if vision_features is not None:
            if has_image is None:
                has_image = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            patches = self.project(vision_features).to(embeds.dtype)
            offsets = self.image_offsets(prompt_lengths, input_ids.shape[0], input_ids.device)
            embeds, attention_mask, labels = insert_patches(embeds, attention_mask, labels, patches, has_image, offsets)
        attention_mask = self._llm_attention_mask(attention_mask, padding)
        if loss_reduction == "token" or labels is None:
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, use_cache=False)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        out.loss = length_weighted_loss(out.logits, labels, LENGTH_POWERS[loss_reduction])
        return out

    def _llm_attention_mask(self, attention_mask: torch.Tensor, padding: bool | None) -> torch.Tensor | None:
        """The mask the LLM attends with. From a 2-D padding mask transformers builds SDPA's mask after reading the
        device twice (whether the mask is all ones), a wait that leaves a launch-bound training step's GPU idle.
        When the caller knows on the host whether the batch has padding, an SDPA LLM gets what transformers would
        choose, without the wait: causal attention alone (no mask) for a batch without padding, the 4-D mask
        (:func:`causal_padding_mask`, which transformers takes as it is) for one with. Otherwise, and for other
        attention implementations, the padding mask."""
        if padding is None or getattr(self.llm.config, "_attn_implementation", None) != "sdpa":
            return attention_mask
        return causal_padding_mask(attention_mask) if padding else None

    def image_offsets(self, prompt_lengths: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Per row, how many text tokens come before the patches."""
        if self.image_position == "after-bos":
            return torch.ones(batch, dtype=torch.long, device=device)
        if prompt_lengths is None:
            raise ValueError(f"image_position {self.image_position!r} needs each row's prompt length")
        return prompt_lengths.to(device=device, dtype=torch.long) - len(self.answer_tag)

    def image_offset(self, prompt_length: int) -> int:
        """Where one sequence's patches go, given its first user turn's token count (BOS included)."""
        return 1 if self.image_position == "after-bos" else prompt_length - len(self.answer_tag)

    def check_answer_tags(self, samples: Sequence[Any], source: str | Path) -> None:
        """For ``before-answer``: every sample's first user turn must end with the answer tag the patches go before
        (a tokenizer that merges the tag with the question's last characters would put them elsewhere)."""
        tag = self.answer_tag
        if not tag:
            return
        for sample in samples:
            end = sample.prompt_length
            if sample.input_ids[end - len(tag) : end] != tag:
                raise DataError(
                    source,
                    f"image_position 'before-answer': the first user turn does not end with the answer tag "
                    f"{self.tokenizer.convert_ids_to_tokens(tag)} (an align-stage caption has no user turn: use "
                    "after-bos there)",
                    record=sample.record_id,
                    field="conversations",
                )

    # -- inference -------------------------------------------------------------------------------------
    def _prompt_inputs(
        self, images: Sequence[Image.Image | None], prompts: Sequence[str], blind: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``inputs_embeds`` and attention mask for a batch of single-turn prompts."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
        device = self.device
        embedding = self.llm.get_input_embeddings()
        rows: list[torch.Tensor] = []
        patches_by_row: dict[int, torch.Tensor] = {}
        with_image = [i for i, image in enumerate(images) if image is not None]
        if with_image:
            pixels = torch.stack([self.image_transform(images[i]) for i in with_image]).to(device)
            features = self.encode_images(pixels)
            if blind:
                features = torch.zeros_like(features)
            patches = self.project(features).to(embedding.weight.dtype)
            patches_by_row = dict(zip(with_image, patches, strict=True))
        for index, prompt in enumerate(prompts):
            text = self.prompt_format.inference_prompt(prompt)
            ids = torch.tensor(self.tokenizer(text).input_ids, device=device)
            text_embeds = embedding(ids)
            if index in patches_by_row:
                at = self.image_offset(len(ids))
                text_embeds = torch.cat([text_embeds[:at], patches_by_row[index], text_embeds[at:]])
            rows.append(text_embeds)
        longest = max(row.shape[0] for row in rows)
        embeds = torch.zeros(len(rows), longest, rows[0].shape[-1], dtype=rows[0].dtype, device=device)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
        for index, row in enumerate(rows):
            embeds[index, longest - row.shape[0] :] = row
            mask[index, longest - row.shape[0] :] = 1
        return embeds, mask

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[Image.Image | None],
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        min_new_tokens: int = 0,
        blind: bool = False,
        do_sample: bool = False,
        temperature: float = 1.0,
        use_cache: bool = True,
    ) -> list[str]:
        """Answers to single-turn ``prompts`` (raw user messages), greedy by default, stopping at EOS."""
        was_training = self.training
        self.eval()
        embeds, mask = self._prompt_inputs(images, prompts, blind)
        sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
        output = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=use_cache,
            **sampling,
        )
        self.train(was_training)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def candidate_token_id(self, candidate: str) -> int:
        """The single token the model emits to start answer ``candidate`` (tokenized as an answer turn)."""
        answer = self.prompt_format.wrap_turn("gpt", candidate, 1).rstrip()
        ids = self.tokenizer(answer, add_special_tokens=False).input_ids
        if ids and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        if len(ids) != 1:
            raise ConfigError("candidates", f"candidate {candidate!r} is {len(ids)} tokens, expected exactly 1")
        return ids[0]

    @torch.no_grad()
    def first_token_probs(
        self,
        images: Sequence[Image.Image | None],
        prompts: Sequence[str],
        candidates: Sequence[str],
        *,
        blind: bool = False,
    ) -> list[dict[str, float]]:
        """Softmax of the first answer token, renormalized over the single-token ``candidates``."""
        token_ids = torch.tensor([self.candidate_token_id(c) for c in candidates], device=self.device)
        was_training = self.training
        self.eval()
        embeds, mask = self._prompt_inputs(images, prompts, blind)
        logits = (
            self.llm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=_left_padded_positions(mask),
                use_cache=False,
            )
            .logits[:, -1]
            .float()
        )
        self.train(was_training)
        probs = torch.softmax(logits, dim=-1)[:, token_ids]
        probs = probs / probs.sum(dim=-1, keepdim=True)
        return [dict(zip(candidates, row.tolist(), strict=True)) for row in probs]


# How much an answer's length discounts each of its tokens, per ``loss_reduction`` other than ``token`` (the LLM's
# own mean over the batch's answer tokens, power 0): ``sample`` weighs every answer the same; ``sqrt`` lies between.
LENGTH_POWERS = {"sample": 1.0, "sqrt": 0.5}


def length_weighted_loss(logits: torch.Tensor, labels: torch.Tensor, power: float) -> torch.Tensor:
    """Next-token cross-entropy over the labelled tokens, each token of a row with n of them weighted n**-power.

    Power 0 is the token mean; power 1 averages each row's tokens, then the rows that have any. With one answer
    per row (``data.split_turns``) power 1 weighs every answer the same, whatever its length: under the token mean
    a 19-token box outweighs a one-word answer 19 to 1 (ShapeScenes' referring expressions then carry most of the
    gradient, and the yes/no answers almost none)."""
    batch, length, vocab = logits.shape
    # Rows of (token, vocab), as the LLM's own loss takes them: the (batch, vocab, length) layout puts the softmax on
    # a middle dimension, whose CUDA kernel took 1.2 ms of the `paper` preset's 3.0 ms step (probe 23, one H100).
    targets = nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # the last position predicts nothing
    per_token = nn.functional.cross_entropy(
        logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(batch, length)
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    # Rows without a labelled token get weight 0 (not a boolean selection: its size would make the host wait).
    weights = torch.where(counts > 0, counts.clamp(min=1).float().pow(-power), 0.0)
    return (per_token.sum(dim=1) * weights).sum() / (counts * weights).sum()


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, length, length), True where a query may attend a key: a real token (``attention_mask``) at or
    before it, and itself. For a real token that is the mask transformers builds for SDPA; a pad also sees itself,
    so that no query is left without a key (a softmax over nothing is NaN, and a NaN value times a zero weight would
    reach the real tokens of the next layer)."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    itself = torch.eye(length, dtype=torch.bool, device=attention_mask.device)
    return (causal[None, None] & attention_mask.bool()[:, None, None, :]) | itself


def insert_patches(
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None,
    patches: torch.Tensor,
    has_image: torch.Tensor,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Image rows: the patches before text position ``offsets`` (default 1: right after BOS); text-only rows:
    K masked zero embeddings at the end. One gather per tensor, so rows may put their patches anywhere."""
    batch, length, width = embeds.shape
    count = patches.shape[1]
    if offsets is None:
        offsets = torch.ones(batch, dtype=torch.long, device=embeds.device)
    position = torch.arange(length + count, device=embeds.device)[None]
    start = offsets[:, None]
    with_image = has_image[:, None]
    in_patch = with_image & (position >= start) & (position < start + count)
    text_index = torch.where(with_image & (position >= start + count), position - count, position)
    is_text = ~in_patch & (text_index < length)
    text_index = text_index.clamp(max=length - 1)
    patch_index = (position - start).clamp(0, count - 1)
    text = embeds.gather(1, text_index[..., None].expand(-1, -1, width))
    image = patches.gather(1, patch_index[..., None].expand(-1, -1, width))
    embeds = torch.where(in_patch[..., None], image, torch.where(is_text[..., None], text, 0.0))
    attention_mask = torch.where(in_patch, 1, torch.where(is_text, attention_mask.gather(1, text_index), 0)).to(
        attention_mask.dtype
    )
    if labels is not None:
        labels = torch.where(is_text, labels.gather(1, text_index), IGNORE_INDEX)
    return embeds, attention_mask, labels


def answer_tag_ids(tokenizer: Any, prompt_format: PromptFormat) -> list[int]:
    """The tokens that close a first user turn (Vicuna's `` ASSISTANT:``, the plain format's newline and ``Out:``):
    the inference prompt's tokens after those of the same prompt cut right after its message."""
    message = "x"
    prompt = prompt_format.inference_prompt(message)
    head = prompt_format.system_prompt + prompt_format.human_template.split("{msg}")[0] + message
    full_ids, head_ids = tokenizer(prompt).input_ids, tokenizer(head).input_ids
    if full_ids[: len(head_ids)] != head_ids or len(full_ids) == len(head_ids):
        raise ConfigError(
            "model.image_position",
            f"'before-answer' needs the prompt format's answer tag {prompt[len(head) :]!r} as tokens of its own, "
            "and this tokenizer merges it with the message",
        )
    return full_ids[len(head_ids) :]


def _left_padded_positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)
