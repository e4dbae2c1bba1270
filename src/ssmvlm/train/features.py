"""Frozen-encoder features per image, computed once per run when caching pays.

The encoder is frozen and training applies no augmentation, so an image's features are the same every epoch.
With the cache on, every image is encoded once before training, in a fixed order and fixed chunks, so a
resumed run sees exactly the features an uninterrupted one saw. A cache within ``AUTO_CACHE_LIMIT_BYTES`` stays
on the training device, where a batch's rows are one gather instead of a host gather and a copy per step.
Without the cache, features are computed per micro-batch. Both paths call the same ``VLM.encode_images``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ssmvlm.data.images import open_image, undecodable_images
from ssmvlm.utils.device import to_device_async
from ssmvlm.utils.progress import progress_bar

AUTO_CACHE_LIMIT_BYTES = 2 * 1024**3
ENCODE_CHUNK = 32


class ImageFeatureSource:
    def __init__(self, vlm: Any, image_paths: list[Path], device: torch.device, *, cache: str = "auto") -> None:
        self.vlm = vlm
        self.image_paths = image_paths
        self.device = device
        backbone = vlm.vision_backbone
        per_image = backbone.num_tokens() * backbone.embed_dim * 4
        fits = per_image * len(image_paths) <= AUTO_CACHE_LIMIT_BYTES
        self.caching = cache == "on" or (cache == "auto" and fits)
        self.cache_device = device if fits else torch.device("cpu")
        self.cache: torch.Tensor | None = None
        self.excluded: set[int] = set()  # undecodable images skipped with --skip-bad; no sample uses them

    def pixels(self, index: int) -> torch.Tensor:
        return self.vlm.image_transform(open_image(self.image_paths[index]))

    def find_undecodable(self, *, show_progress: bool = True) -> dict[int, str]:
        """``{index: reason}`` of the images that fail to decode (for ``--skip-bad``), before training starts."""
        bad = undecodable_images(self.image_paths, show_progress=show_progress)
        self.excluded = set(bad)
        return bad

    def precompute(self, *, show_progress: bool = True) -> None:
        if not self.caching or not self.image_paths:
            return
        chunks = []
        with progress_bar(disable=not show_progress, transient=True) as progress:
            task = progress.add_task("encoding images", total=len(self.image_paths), status="frozen encoder")
            for start in range(0, len(self.image_paths), ENCODE_CHUNK):
                indices = range(start, min(start + ENCODE_CHUNK, len(self.image_paths)))
                pixels = torch.stack([self._pixels_or_blank(i) for i in indices]).to(self.device)
                chunks.append(self.vlm.encode_images(pixels).to(self.cache_device))
                progress.advance(task, len(indices))
        self.cache = torch.cat(chunks)

    def _pixels_or_blank(self, index: int) -> torch.Tensor:
        if index in self.excluded:
            height, width = self.vlm.image_transform.size
            return torch.zeros(3, height, width)
        return self.pixels(index)

    def features(self, image_indices: list[int | None]) -> torch.Tensor | None:
        """(B, N, D) features on the device; zeros for text-only rows; None for an all-text batch."""
        present = [i for i in image_indices if i is not None]
        if not present:
            return None
        if self.cache is not None:
            found = self.cache[to_device_async(torch.tensor(present), self.cache.device)].to(self.device)
        else:
            pixels = torch.stack([self.pixels(i) for i in present]).to(self.device)
            found = self.vlm.encode_images(pixels)
        if len(present) == len(image_indices):
            return found
        out = found.new_zeros(len(image_indices), *found.shape[1:])
        rows = to_device_async(torch.tensor([k for k, i in enumerate(image_indices) if i is not None]), found.device)
        out[rows] = found
        return out
