"""Multi-turn conversations and continuation scoring with a trained VLM.

Both build the model's input exactly as training does (:func:`ssmvlm.train.dataset.tokenize_conversation`):
each turn string of the prompt format (Vicuna v1.5: ``{system} USER: {msg} ASSISTANT: ``, then
``{answer}</s>``) tokenized on its own after ``rstrip``, BOS on the first only, and the image's K patch
embeddings where the model's ``image_position`` puts them (after BOS, or after the first user turn). The image
is encoded once per conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ssmvlm.vlm.model import VLM


def turn_ids(vlm: VLM, turns: Sequence[tuple[str, str]]) -> list[int]:
    """Token ids of ``turns`` ((role, text) pairs, human first) as training tokenizes them."""
    ids: list[int] = []
    for index, text in enumerate(vlm.prompt_format.turn_strings(list(turns))):
        ids += vlm.tokenizer(text.rstrip(), add_special_tokens=index == 0).input_ids
    return ids


@torch.no_grad()
def image_patches(vlm: VLM, image: Image.Image | None) -> torch.Tensor | None:
    """The connector's (K, D) patch embeddings of ``image``, or None for a text-only conversation."""
    if image is None:
        return None
    pixels = vlm.image_transform(image)[None].to(vlm.device)
    embedding = vlm.llm.get_input_embeddings()
    return vlm.project(vlm.encode_images(pixels))[0].to(embedding.weight.dtype)


def embed(vlm: VLM, ids: Sequence[int], patches: torch.Tensor | None, prompt_length: int) -> torch.Tensor:
    """(1, L, D) input embeddings: the tokens, with the patches inserted where the model puts them
    (``prompt_length``: the first user turn's tokens, BOS included)."""
    tokens = vlm.llm.get_input_embeddings()(torch.tensor(list(ids), device=vlm.device))
    if patches is not None:
        at = vlm.image_offset(prompt_length)
        tokens = torch.cat([tokens[:at], patches, tokens[at:]])
    return tokens[None]


class Conversation:
    """A chat about one image (or none): the turns so far, and the image's patches, computed once."""

    def __init__(self, vlm: VLM, image: Image.Image | None) -> None:
        self.vlm = vlm
        self.turns: list[tuple[str, str]] = []
        self.patches = image_patches(vlm, image)

    def prompt_ids(self, message: str) -> list[int]:
        """The token ids the model reads before answering ``message`` (the conversation so far, then it)."""
        return turn_ids(self.vlm, [*self.turns, ("human", message)])

    @torch.no_grad()
    def ask(self, message: str, *, max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0) -> str:
        """The model's answer to ``message``; question and answer join the conversation."""
        vlm = self.vlm
        was_training = vlm.training
        vlm.eval()
        first_turn = self.turns[0][1] if self.turns else message
        embeds = embed(vlm, self.prompt_ids(message), self.patches, len(turn_ids(vlm, [("human", first_turn)])))
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
        )
        output = vlm.llm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=vlm.device),
            max_new_tokens=max_new_tokens,
            eos_token_id=vlm.tokenizer.eos_token_id,
            pad_token_id=vlm.tokenizer.pad_token_id,
            **sampling,
        )
        vlm.train(was_training)
        answer = vlm.tokenizer.decode(output[0], skip_special_tokens=True).strip()
        self.turns += [("human", message), ("gpt", answer)]
        return answer


@torch.no_grad()
def continuation_logprob(vlm: VLM, image: Image.Image | None, context: str, continuation: str) -> tuple[float, bool]:
    """(log P(continuation | image, context), whether greedy decoding would produce it).

    ``context`` is the user message; ``continuation`` the start of the answer turn, tokenized as training
    tokenizes answers (on its own, without BOS; surrounding spaces are dropped, as the turn format strips them).
    """
    answer = vlm.tokenizer(continuation.strip(), add_special_tokens=False).input_ids
    if not answer:
        return 0.0, True
    prompt = turn_ids(vlm, [("human", context)])
    patches = image_patches(vlm, image)
    was_training = vlm.training
    vlm.eval()
    inputs = embed(vlm, prompt + answer, patches, len(prompt))
    logits = vlm.llm(inputs_embeds=inputs, use_cache=False).logits[0].float()
    vlm.train(was_training)
    # the logits at position p predict token p + 1: the answer's tokens are predicted by the positions before
    first = logits.shape[0] - len(answer) - 1
    predicted = torch.log_softmax(logits[first:-1], dim=-1)
    targets = torch.tensor(answer, device=predicted.device)
    logprob = predicted.gather(1, targets[:, None]).sum().item()
    return logprob, bool((predicted.argmax(dim=-1) == targets).all())
