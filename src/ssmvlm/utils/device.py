"""The one place that turns a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a torch device, and
host tensors' copies to it."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA when available, else the CPU; anything else as torch reads it."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without the host waiting for the GPU: a plain host-to-GPU copy synchronizes the
    stream, so a training step's small index copies would each stall the host; from pinned memory the copy is
    queued (torch's pinned-memory cache keeps the buffer until the copy has run)."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
