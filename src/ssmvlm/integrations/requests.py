"""What an evaluation harness asks of a VLM, answered by an ssmvlm run, with no harness imported.

lmms-eval's request types map onto these functions (:mod:`ssmvlm.integrations.lmms_eval` does the unpacking):
``generate_until`` → :func:`generate_until`, ``loglikelihood`` → :func:`loglikelihood`. The context a harness
gives is the user message; the run's own prompt format (Vicuna v1.5 for the paper's runs) is applied around it,
as for every other ssmvlm prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from ssmvlm.data.box_frames import boxes_to_raw_frame
from ssmvlm.utils.errors import ConfigError, DataError
from ssmvlm.vlm.conversation import continuation_logprob

# Generation settings a harness may send that greedy decoding with a length limit honours or ignores safely.
_IGNORED = {"temperature", "top_p", "num_beams", "do_sample", "image_aspect_ratio", "min_new_tokens"}


def one_image(visuals: Any, where: str) -> Image.Image | None:
    """The single image of a request (ssmvlm VLMs read one image per prompt), or None for text only."""
    if visuals is None:
        return None
    items = [v for v in (visuals if isinstance(visuals, list | tuple) else [visuals]) if v is not None]
    if not items:
        return None
    if len(items) > 1:
        raise DataError(where, f"gives {len(items)} images; ssmvlm VLMs read one image per prompt")
    if not isinstance(items[0], Image.Image):
        raise DataError(where, f"expected a PIL image, got {type(items[0]).__name__}")
    return items[0].convert("RGB")


def generation_settings(gen_kwargs: Mapping[str, Any], default_max_new_tokens: int) -> tuple[list[str], dict[str, Any]]:
    """(stop strings, VLM.generate keyword arguments) from a harness's generation kwargs."""
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    unknown = set(gen_kwargs) - _IGNORED - {"until", "max_new_tokens"}
    if unknown:
        raise ConfigError("generation_kwargs", f"unsupported keys {', '.join(sorted(unknown))}")
    sampling = bool(gen_kwargs.get("do_sample")) and float(gen_kwargs.get("temperature") or 0) > 0
    settings: dict[str, Any] = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens") or default_max_new_tokens)}
    if sampling:
        settings.update(do_sample=True, temperature=float(gen_kwargs["temperature"]))
    return until, settings


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first stop string (the harness's ``until``)."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text


def generate_until(
    vlm: Any,
    contexts: Sequence[str],
    images: Sequence[Image.Image | None],
    gen_kwargs: Mapping[str, Any],
    *,
    default_max_new_tokens: int = 128,
) -> list[str]:
    """Answers to a batch of requests that share their generation kwargs.

    A VLM that answers boxes in its own frame (``model.box_frame=model``) has them moved to the raw image's frame,
    the one harnesses score RefCOCO-style boxes in.
    """
    until, settings = generation_settings(gen_kwargs, default_max_new_tokens)
    texts = [cut_at_stop(text, until) for text in vlm.generate(list(images), list(contexts), **settings)]
    if getattr(vlm, "box_frame", "raw") == "model":
        texts = [
            boxes_to_raw_frame(text, vlm.image_transform, *image.size) if image is not None else text
            for text, image in zip(texts, images, strict=True)
        ]
    return texts


def loglikelihood(vlm: Any, context: str, continuation: str, image: Image.Image | None) -> tuple[float, bool]:
    """(log-probability of ``continuation`` as the answer to ``context``, whether greedy decoding gives it)."""
    return continuation_logprob(vlm, image, context, continuation)
