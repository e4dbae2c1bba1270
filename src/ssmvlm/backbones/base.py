"""The one interface every vision backbone has, whatever its family.

A :class:`VisionBackbone` wraps a *trunk*: the family's model with the official module names, so that an
official checkpoint's state dict loads into ``backbone.trunk`` with ``strict=True``. The wrapper adds what a
VLM needs: tokens (B, N, D) from a chosen feature tap, the token count at a resolution, the image transform
with the backbone's own mean/std, and per-stage feature maps for dense heads.
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ssmvlm.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    as_height_width,
    build_image_transform,
)
from ssmvlm.utils.errors import CheckpointError

_TAP_PATTERN = re.compile(
    r"^(?:s(?P<stage>\d+))?(?:\.?b(?P<block>-?\d+)|\.(?P<input>in))?(?P<outnorm>\.outnorm)?$"
)


@dataclass(frozen=True)
class FeatureTap:
    """Where tokens are read: ``stage`` (1-based, None for plain ViT-like models) and ``block``.

    ``block`` is a 0-based index within the stage (or over all blocks when ``stage`` is None); negative
    values count from the end, so ``block=-1`` is the stage's last block and ``FeatureTap(None, -2)`` is a
    ViT's penultimate block (prismatic-vlms). Written as ``s3.b14``, ``s3`` (last block of stage 3) or ``b-2``.

    ``stage_input`` reads a stage's input instead: the previous stage's output after its downsample, before any
    block of this stage (``s3.in``; the paper release's MambaVision "stage 3", which has the shape of ``s3``
    but is another point). ``outnorm`` adds the family's trained output norm of the tapped stage, which dense
    (detection/segmentation) checkpoints carry (``s3.b14.outnorm``, VMamba's ``outnorm2``).
    """

    stage: int | None = None
    block: int = -1
    stage_input: bool = False
    outnorm: bool = False

    @classmethod
    def parse(cls, text: str | FeatureTap) -> FeatureTap:
        if isinstance(text, FeatureTap):
            return text
        match = _TAP_PATTERN.match(text.strip())
        if not match or (match["stage"] is None and match["block"] is None) or (
            match["stage"] is None and match["outnorm"]
        ):
            raise ValueError(
                f"feature tap {text!r} must look like 's3', 's3.b14', 's3.in', 's3.b14.outnorm' or 'b-2'"
            )
        stage = int(match["stage"]) if match["stage"] is not None else None
        block = int(match["block"]) if match["block"] is not None else -1
        return cls(stage, block, stage_input=match["input"] is not None, outnorm=match["outnorm"] is not None)

    def block_index(self, depth: int, model_name: str) -> int:
        """This tap's 0-based block in a plain (single-stage) model of ``depth`` blocks."""
        if self.stage not in (None, 1) or self.stage_input or self.outnorm:
            raise ValueError(f"{model_name} is a plain ViT: taps are blocks 'bK', got {self}")
        if not -depth <= self.block < depth:
            raise ValueError(f"{model_name} has {depth} blocks, tap {self} is out of range")
        return self.block % depth

    def stage_block_index(self, stage_depths: list[int], model_name: str) -> tuple[int, int]:
        """This tap's 0-based (stage, block) in a hierarchical model whose stages have ``stage_depths`` blocks.

        A stage-input tap gives block -1 *unreduced*: the stage's first ``block + 1 = 0`` blocks run, which is
        what every family's ``blocks[: block + 1]`` computes.
        """
        if self.stage is None or not 1 <= self.stage <= len(stage_depths):
            raise ValueError(f"{model_name} has stages s1..s{len(stage_depths)}; tap {self} names none of them")
        if self.stage_input:
            return self.stage - 1, -1
        depth = stage_depths[self.stage - 1]
        if not -depth <= self.block < depth:
            raise ValueError(f"{model_name}: stage {self.stage} has {depth} blocks; tap {self} is out of range")
        return self.stage - 1, self.block % depth

    def __str__(self) -> str:
        if self.stage is None:
            return f"b{self.block}"
        text = f"s{self.stage}"
        if self.stage_input:
            text += ".in"
        elif self.block != -1:
            text += f".b{self.block}"
        return text + (".outnorm" if self.outnorm else "")


@dataclass(frozen=True)
class TapInfo:
    """Channels and stride of the features at a tap; ``extra_tokens`` counts class tokens kept in the output."""

    dim: int
    stride: int
    extra_tokens: int = 0


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the zoo knows about a backbone before building it."""

    name: str
    family: str
    kind: str  # "ssm" | "hybrid" | "transformer" | "cnn"
    default_tap: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    default_image_size: int = 224
    pretrained_sources: dict[str, str] = field(default_factory=dict)
    description: str = ""


class VisionBackbone(nn.Module, abc.ABC):
    """A vision encoder behind the zoo's interface. Families implement the three abstract methods."""

    # Families whose dense checkpoints carry trained per-stage output norms set this (taps ``sN….outnorm``).
    supports_outnorm: bool = False

    def __init__(
        self,
        spec: BackboneSpec,
        trunk: nn.Module,
        *,
        feature_tap: str | FeatureTap | None = None,
        image_size: int | tuple[int, int] = 224,
        resize_strategy: str = "letterbox",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.feature_tap = FeatureTap.parse(feature_tap or spec.default_tap)
        self.image_size = image_size
        self.resize_strategy = resize_strategy
        if self.feature_tap.outnorm and not self.supports_outnorm:
            raise ValueError(f"{spec.name} has no trained output norms: tap {self.feature_tap} is not available")
        self.tap_info(self.feature_tap)  # validates the tap against this trunk

    # -- what each family implements ---------------------------------------------------------------
    @abc.abstractmethod
    def forward_tokens(self, pixel_values: torch.Tensor, tap: FeatureTap) -> torch.Tensor:
        """Tokens (B, N, D) at ``tap``, computing no more of the trunk than the tap needs."""

    @abc.abstractmethod
    def tap_info(self, tap: FeatureTap) -> TapInfo:
        """Channels and stride at ``tap``; raises ValueError for a tap this trunk does not have."""

    @abc.abstractmethod
    def forward_stages(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps (B, C_i, H_i, W_i) of every stage, for dense heads and classification pooling."""

    @property
    @abc.abstractmethod
    def stage_dims(self) -> list[int]:
        """Channels of each map that :meth:`forward_stages` returns."""

    # -- shared behaviour ----------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(pixel_values, self.feature_tap)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def default_feature_tap(self) -> FeatureTap:
        return FeatureTap.parse(self.spec.default_tap)

    @property
    def embed_dim(self) -> int:
        return self.tap_info(self.feature_tap).dim

    def num_tokens(self, image_size: int | tuple[int, int] | None = None) -> int:
        height, width = as_height_width(image_size if image_size is not None else self.image_size)
        info = self.tap_info(self.feature_tap)
        return math.ceil(height / info.stride) * math.ceil(width / info.stride) + info.extra_tokens

    @property
    def image_transform(self) -> ImageTransform:
        return build_image_transform(self.resize_strategy, self.image_size, self.spec.mean, self.spec.std)

    def param_count(self) -> int:
        """Parameters of the trunk as released (the number papers quote, head included)."""
        return sum(p.numel() for p in self.trunk.parameters())

    def load_checkpoint(self, path: str | Path, *, strict: bool = True) -> None:
        """Load an official or ssmvlm checkpoint into the trunk (safely: safetensors or weights-only)."""
        from ssmvlm.utils.io import load_state_dict

        state = load_state_dict(path)
        try:
            # A state dict that already fits (ssmvlm's own outputs) is loaded as it is: family converters
            # guess the layout from the keys (timm's Swin filter takes a headless state dict for the authors'
            # layout and moves its downsamples). They fail with KeyError/AttributeError on another
            # architecture's keys; load_state_dict raises RuntimeError on shape mismatches.
            if not self._fits_as_is(state):
                state = self.adapt_state_dict(state)
            missing, unexpected = self.trunk.load_state_dict(state, strict=False)
        except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: does not fit {self.name}: {_first_line(exc)}") from None
        # Backbone-only checkpoints (no classifier head) are expected and fine.
        missing = [k for k in missing if not self.is_head_key(k)]
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"{path}: does not fit {self.name}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
            )

    def _fits_as_is(self, state: dict[str, torch.Tensor]) -> bool:
        own = self.trunk.state_dict()
        same_shapes = all(key in own and own[key].shape == value.shape for key, value in state.items())
        return same_shapes and all(key in state or self.is_head_key(key) for key in own)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Family hook: rename legacy keys, interpolate position embeddings for this resolution."""
        return state

    def is_head_key(self, key: str) -> bool:
        """Family hook: keys of the classification head, which backbone-only checkpoints leave out."""
        return key.startswith(("head.", "classifier.", "fc."))

    def extra_repr(self) -> str:
        return f"name={self.name}, tap={self.feature_tap}, image_size={self.image_size}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
