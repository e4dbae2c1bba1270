"""Δ in the low-rank form Mamba-style mixers make it, for scans that can fuse the projection."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LowRankDelta:
    """Δ[b, d, t] = Σ_r weight[d, r] · inputs[b, d // (dim / G), r, t], before delta_bias and softplus.

    That is dt_proj applied to the rank-R slice of x_proj's output, with G groups of channels sharing their
    inputs (VMamba: one group per scan order). A backend that fuses the projection reads R rows per group
    instead of a (batch, dim, L) Δ, which is then never written out; the others get :meth:`materialize`.
    ``inputs`` may be a strided view (rows of stride L), as a split of x_proj's output is.
    """

    weight: torch.Tensor  # (dim, R)
    inputs: torch.Tensor  # (batch, G, R, L)

    def __post_init__(self) -> None:
        if self.weight.dim() != 2 or self.inputs.dim() != 4 or self.inputs.shape[2] != self.weight.shape[1]:
            raise ValueError(
                f"LowRankDelta needs weight (dim, R) and inputs (batch, G, R, L); got {tuple(self.weight.shape)} "
                f"and {tuple(self.inputs.shape)}"
            )
        if self.weight.shape[0] % self.inputs.shape[1]:
            raise ValueError(f"LowRankDelta: dim {self.weight.shape[0]} is not a multiple of G={self.inputs.shape[1]}")

    @property
    def shape(self) -> torch.Size:
        """The shape of the Δ it stands for, (batch, dim, L)."""
        return torch.Size((self.inputs.shape[0], self.weight.shape[0], self.inputs.shape[3]))

    def materialize(self) -> torch.Tensor:
        """Δ as a (batch, dim, L) tensor: one batched matmul (differentiable).

        Inputs laid out time-major ((batch, L, G, R) memory, as ``cross_scan(..., time_major=True)`` makes them) give
        Δ in (batch, L, dim) memory, as the CPU training scan reads it: one product with the block-diagonal weight.
        """
        dim, rank = self.weight.shape
        batch, groups, _, length = self.inputs.shape
        if self.inputs.stride(3) > self.inputs.stride(1) >= self.inputs.stride(2):  # time outermost after batch
            per_group = self.weight.view(groups, dim // groups, rank).transpose(1, 2)
            tokens = self.inputs.permute(0, 3, 1, 2).reshape(batch, length, groups * rank)
            return torch.matmul(tokens, torch.block_diag(*per_group)).transpose(1, 2)
        return torch.matmul(self.weight.view(groups, dim // groups, rank), self.inputs).view(batch, dim, length)
