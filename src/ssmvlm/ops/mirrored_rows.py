"""u whose second half of rows is its first half read backwards, for scans that can read rows in reverse."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MirroredRows:
    """Stands for ``torch.cat([rows, rows.flip(-1)], dim=1)``, (batch, 2·R, L), given ``rows`` (batch, R, L).

    VMamba's four scan orders are two orders and their reverses. A backend that reads the second half's rows
    backwards from the first half's memory needs only the two orders written out (half the cross-scan's writes,
    half its memory); the others get :meth:`materialize`.
    """

    rows: torch.Tensor  # (batch, R, L)

    def __post_init__(self) -> None:
        if self.rows.dim() != 3:
            raise ValueError(f"MirroredRows needs rows (batch, R, L); got {tuple(self.rows.shape)}")

    @property
    def shape(self) -> torch.Size:
        """The shape of the u it stands for, (batch, 2·R, L)."""
        batch, rows, length = self.rows.shape
        return torch.Size((batch, 2 * rows, length))

    def materialize(self) -> torch.Tensor:
        """u as a (batch, 2·R, L) tensor (differentiable)."""
        return torch.cat([self.rows, self.rows.flip(-1)], dim=1)
