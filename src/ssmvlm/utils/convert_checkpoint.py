"""Convert an official checkpoint that holds pickled objects into a plain safetensors file.

Run only on files you trust, once: ``python -m ssmvlm.utils.convert_checkpoint IN.pth OUT.safetensors``.
It unpickles the input (that is why ssmvlm never does so by itself), keeps the tensors of its
``model``/``state_dict`` entry and writes them as safetensors, which load without executing code.
detectron2 model-zoo ``.pkl`` files (plain pickles of numpy arrays) are read with ``pickle`` and their
arrays turned into tensors.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any


def _load_trusted(src: Path) -> Any:
    import torch

    try:
        return torch.load(str(src), map_location="cpu", weights_only=False)  # trusted: see module doc
    except RuntimeError:  # not a torch.save file: detectron2's .pkl is a plain pickle
        with src.open("rb") as handle:
            return pickle.load(handle, encoding="latin1")


def convert(src: Path, dst: Path, entry: str | None = None) -> int:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from ssmvlm.utils.dotted_keys import flatten_keys

    obj = _load_trusted(src)
    if entry is None:
        entries = ("model", "state_dict", "module")
        entry = next((k for k in entries if isinstance(obj, dict) and k in obj), None)
    state = obj[entry] if entry else obj
    arrays = (torch.Tensor, np.ndarray)  # detectron2 stores numpy arrays
    # prismatic nests its state dicts ({"projector": {...}, "llm_backbone": {...}}): they become projector.* keys
    tensors = {k: torch.as_tensor(v).contiguous() for k, v in flatten_keys(state).items() if isinstance(v, arrays)}
    save_file(tensors, str(dst))
    return len(tensors)


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m ssmvlm.utils.convert_checkpoint IN.pth OUT.safetensors [ENTRY]")
    count = convert(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else None)
    print(f"wrote {count} tensors to {sys.argv[2]}")


if __name__ == "__main__":
    main()
