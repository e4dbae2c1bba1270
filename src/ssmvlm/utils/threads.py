"""CPU thread control for the commands that compute (``train``, ``evaluate``, ``pretrain run``).

torch starts one thread per core; on a machine shared with other jobs that oversubscribes the cores (on a
2-core machine, pretraining ran at 43 images/s with torch's 2 threads against 197 with one). ``--threads N``
sets the count, and every ``run.json`` records the count the run used.
"""

from __future__ import annotations

import os

from ssmvlm.utils.errors import ConfigError


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` (None: leave torch's default); also exported as OMP_NUM_THREADS so
    that data-loader workers started later use the same count."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError("--threads", f"must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def current_threads() -> int | None:
    """torch's intra-op thread count, or None when torch was never imported (a data-only command)."""
    import sys

    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
