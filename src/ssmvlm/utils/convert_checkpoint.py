"""Convert an official checkpoint that holds pickled objects into a plain safetensors file.

Run only on files you trust, once: ``python -m ssmvlm.utils.convert_checkpoint IN.pth OUT.safetensors``.
It unpickles the input (that is why ssmvlm never does so by itself), keeps the tensors of its
``model``/``state_dict`` entry and writes them as safetensors, which load without executing code.
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(src: Path, dst: Path, entry: str | None = None) -> int:
    import torch
    from safetensors.torch import save_file

    obj = torch.load(str(src), map_location="cpu", weights_only=False)  # trusted by the user, see module doc
    if entry is None:
        entry = next((k for k in ("model", "state_dict", "module") if isinstance(obj, dict) and k in obj), None)
    state = obj[entry] if entry else obj
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, str(dst))
    return len(tensors)


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m ssmvlm.utils.convert_checkpoint IN.pth OUT.safetensors [ENTRY]")
    count = convert(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else None)
    print(f"wrote {count} tensors to {sys.argv[2]}")


if __name__ == "__main__":
    main()
