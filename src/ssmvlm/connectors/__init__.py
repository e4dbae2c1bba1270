"""Connectors: project frozen vision tokens (B, N, D_vision) into the LLM's embedding space (B, N', D_llm).

The three projectors of prismatic-vlms, by their ``arch_specifier`` names:

- ``linear``: one Linear layer;
- ``gelu-mlp``: Linear(D_vision→D_llm), GELU, Linear(D_llm→D_llm), the LLaVA-1.5 / paper default;
- ``fused-gelu-mlp``: Linear(D_vision→4·D_vision), GELU, Linear(4·D_vision→D_llm), GELU, Linear(D_llm→D_llm),
  the 3-layer MLP the paper uses to stabilize collapsed localization.

An optional token pooling (``pool > 1``) averages ``pool × pool`` neighbourhoods of the token grid before the
projection, for high-resolution encoders whose token count would not fit the LLM's context. An optional LayerNorm
(``input_norm``, as in Qwen2-VL's patch merger) puts every encoder's tokens on one scale before the projector:
frozen encoders' token norms differ by an order of magnitude between families and all sit far above a
from-scratch LLM's word embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ssmvlm.utils.errors import ConfigError


def _linear(vision_dim: int, llm_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(vision_dim, llm_dim))


def _gelu_mlp(vision_dim: int, llm_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(vision_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))


def _fused_gelu_mlp(vision_dim: int, llm_dim: int) -> nn.Module:
    hidden = 4 * vision_dim
    return nn.Sequential(
        nn.Linear(vision_dim, hidden),
        nn.GELU(),
        nn.Linear(hidden, llm_dim),
        nn.GELU(),
        nn.Linear(llm_dim, llm_dim),
    )


CONNECTORS: dict[str, Callable[[int, int], nn.Module]] = {
    "linear": _linear,
    "gelu-mlp": _gelu_mlp,
    "fused-gelu-mlp": _fused_gelu_mlp,
}


class TokenPool(nn.Module):
    """Average ``factor × factor`` neighbourhoods of a token grid (B, H·W, D) → (B, ⌈H/f⌉·⌈W/f⌉, D).

    The grid shape comes from the encoder (``grid_hw``); a ragged last row/column is averaged over the tokens
    it has (``ceil_mode`` with ``count_include_pad=False``), so no token is dropped.
    """

    def __init__(self, factor: int, grid_hw: tuple[int, int]) -> None:
        super().__init__()
        self.factor = factor
        self.grid_hw = grid_hw

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, dim = tokens.shape
        height, width = self.grid_hw
        if count != height * width:
            raise ValueError(f"token pooling expects a {height}x{width} grid ({height * width} tokens), got {count}")
        grid = tokens.transpose(1, 2).reshape(batch, dim, height, width)
        pooled = F.avg_pool2d(grid, self.factor, self.factor, ceil_mode=True, count_include_pad=False)
        return pooled.flatten(2).transpose(1, 2)

    def num_tokens(self) -> int:
        height, width = self.grid_hw
        return math.ceil(height / self.factor) * math.ceil(width / self.factor)


class Connector(nn.Module):
    """Optional token pooling followed by a projector; ``num_tokens`` is what the LLM sees per image."""

    def __init__(
        self,
        name: str,
        vision_dim: int,
        llm_dim: int,
        *,
        pool: int = 1,
        grid_hw: tuple[int, int] | None = None,
        input_norm: bool = False,
    ) -> None:
        super().__init__()
        if name not in CONNECTORS:
            raise ConfigError("model.connector", f"unknown connector {name!r}", allowed=sorted(CONNECTORS))
        if pool < 1:
            raise ConfigError("model.token_pool", f"must be >= 1, got {pool}")
        if pool > 1 and grid_hw is None:
            raise ConfigError("model.token_pool", "pooling needs the encoder's token grid (H, W)")
        self.name = name
        self.pool = TokenPool(pool, grid_hw) if pool > 1 and grid_hw is not None else None
        # Absent rather than an identity when off, so checkpoints without it keep their keys.
        self.input_norm = nn.LayerNorm(vision_dim) if input_norm else None
        self.projector = CONNECTORS[name](vision_dim, llm_dim)

    def forward(self, vision_tokens: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            vision_tokens = self.pool(vision_tokens)
        if self.input_norm is not None:
            vision_tokens = self.input_norm(vision_tokens)
        return self.projector(vision_tokens)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.pool.num_tokens() if self.pool is not None else num_input_tokens


def build_connector(
    name: str,
    vision_dim: int,
    llm_dim: int,
    *,
    pool: int = 1,
    grid_hw: tuple[int, int] | None = None,
    input_norm: bool = False,
) -> Connector:
    """A connector initialized as prismatic-vlms does: seeded with the vision width, not the run seed.

    The global RNG is left untouched (forked), so the rest of the run's randomness does not depend on
    whether a connector was built before or after it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(vision_dim)
        return Connector(name, vision_dim, llm_dim, pool=pool, grid_hw=grid_hw, input_norm=input_norm)


__all__ = ["CONNECTORS", "Connector", "TokenPool", "build_connector"]
