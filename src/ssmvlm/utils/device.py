"""The one place that turns a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a torch device."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA when available, else the CPU; anything else as torch reads it."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
