"""The interface a model must offer to be evaluated (implemented by ``ssmvlm.vlm.VLM``)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from PIL import Image


@runtime_checkable
class EvalModel(Protocol):
    """Batched greedy generation and first-token candidate probabilities, with an image-blind switch.

    ``prompts`` are raw user messages; the model applies its own prompt format. ``image_transform`` is the
    frozen encoder's ``ssmvlm.data.transforms.ImageTransform`` (for the model-frame box convention).
    """

    image_transform: Any

    def generate(
        self, images: list[Image.Image], prompts: list[str], *, max_new_tokens: int = 128, blind: bool = False
    ) -> list[str]: ...

    def first_token_probs(
        self, images: list[Image.Image], prompts: list[str], candidates: list[str], *, blind: bool = False
    ) -> list[dict[str, float]]: ...
