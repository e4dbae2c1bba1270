"""Does Swin nano's small window hold its pretraining back? (issue 21: Swin nano 43.9% top-1 at 480,000 images)

`swin_nano` keeps Swin-T's geometry at any size: window = image / 32, so window 3 at 96 px, where every other
family reaches 74-99%. This pretrains the same network with window = image / 16 (window 6 at 96 px: stage 3's 6x6
map is one window) on the study's pretraining scenes, with the study's classification budget, in this process.

    python benchmarks/signal_probes/swin_window_probe.py --data PRETRAIN_SCENES_DIR --out DIR \
        [--images-seen 480000] [--divisor 16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssmvlm.backbones import timm_models
from ssmvlm.config import from_dict
from ssmvlm.pretrain import run_pretraining
from ssmvlm.pretrain.config import PretrainConfig


def register_variant(divisor: int) -> str:
    name = f"swin_nano_w{divisor}"
    spec = timm_models._hier_spec(
        name, "swin", "transformer", nano=True, description=f"swin_nano with window = image/{divisor}"
    )
    create = timm_models._timm_factory(
        "swin_tiny_patch4_window7_224",
        {"embed_dim": 32, "depths": (2, 2, 6, 2), "num_heads": (1, 2, 4, 8), "num_classes": 0, "drop_path_rate": 0.0},
    )
    timm_models._register_hierarchical(
        spec,
        timm_models.TimmSwinBackbone,
        create,
        lambda hw: {"img_size": hw, "window_size": (hw[0] // divisor, hw[1] // divisor)},
        "swin_tiny_patch4_window7_224",
    )
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the pretraining scenes: a dataset cell's data/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images-seen", type=int, default=480_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--divisor", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    backbone = register_variant(args.divisor)
    config = from_dict(
        PretrainConfig,
        {
            "backbone": backbone,
            "objective": "classification",
            "image_size": 96,
            "images_seen": args.images_seen,
            "batch_size": args.batch_size,
            "seed": 0,
            "device": args.device,
            "data": {"source": "shapes", "root": str(args.data)},
        },
    )
    metrics = run_pretraining(config, args.out)
    print(json.dumps({"backbone": backbone, "top1": metrics.get("top1")}))


if __name__ == "__main__":
    main()
