"""Do a frozen encoder's tokens carry every object's colour and shape, or only the salient object's?

For each object of a ShapeScenes split's square images, the tokens whose cell centres fall inside its box are
averaged (the nearest cell when none does); a logistic regression (L-BFGS) fitted on the training split's objects then
predicts the colour and the shape of the test split's objects, per object size. High accuracy for every size
means the per-object information is in the tokens and a VLM that fails to answer about an object fails to bind;
accuracy only for the large (salient) objects means the encoder does not carry the others.

    python benchmarks/signal_probes/object_probe.py --run STUDY/runs/train/CELL --data STUDY/runs/dataset/CELL/data

(``--run``: a trained VLM run, for its encoder and image transform.) Prints a Markdown table; ``--out FILE``
writes it as JSON too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ssmvlm.train.features import ImageFeatureSource
from ssmvlm.vlm.builder import load_vlm

ATTRIBUTES = ("color", "shape")


def object_features(vlm: Any, data: Path, split: str) -> tuple[torch.Tensor, list[dict]]:
    """One mean-token vector per object of the split's square images, and that object's record."""
    scenes = [s for s in json.loads((data / split / "scenes.json").read_text()) if s["width"] == s["height"]]
    source = ImageFeatureSource(vlm, [data / s["file_name"] for s in scenes], torch.device("cpu"), cache="on")
    with torch.no_grad():
        source.precompute()
    side = round(source.cache.shape[1] ** 0.5)
    vectors, objects = [], []
    for scene, grid in zip(scenes, source.cache.view(len(scenes), side, side, -1), strict=True):
        cell = scene["width"] / side
        centres = (torch.arange(side) + 0.5) * cell
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            rows = ((centres >= y0) & (centres <= y1)).nonzero().flatten()
            cols = ((centres >= x0) & (centres <= x1)).nonzero().flatten()
            if len(rows) == 0 or len(cols) == 0:
                rows = torch.tensor([min(int((y0 + y1) / 2 / cell), side - 1)])
                cols = torch.tensor([min(int((x0 + x1) / 2 / cell), side - 1)])
            vectors.append(grid[rows][:, cols].mean(dim=(0, 1)))
            objects.append(obj)
    return torch.stack(vectors), objects


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.nn.Linear:
    """Multinomial logistic regression with a small L2 penalty, full-batch L-BFGS (deterministic)."""
    probe = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(probe(features), labels) + 1e-4 * probe.weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)  # the probe's initialization
    vlm = load_vlm(args.run, device="cpu").eval()
    train_x, train_objects = object_features(vlm, args.data, "train")
    test_x, test_objects = object_features(vlm, args.data, "test")
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    sizes = sorted({o["size"] for o in test_objects})
    results: dict[str, dict[str, float]] = {}
    for attribute in ATTRIBUTES:
        names = sorted({o[attribute] for o in train_objects})
        train_y = torch.tensor([names.index(o[attribute]) for o in train_objects])
        test_y = torch.tensor([names.index(o[attribute]) for o in test_objects])
        probe = fit_linear_probe((train_x - mean) / std, train_y, len(names))
        with torch.no_grad():
            correct = (probe((test_x - mean) / std).argmax(1) == test_y).float()
        results[attribute] = {"all": 100 * correct.mean().item(), "chance": 100 / len(names)}
        for size in sizes:
            in_size = torch.tensor([o["size"] == size for o in test_objects])
            results[attribute][size] = 100 * correct[in_size].mean().item()
    columns = ["all", *sizes, "chance"]
    print(f"{len(train_objects)} training objects, {len(test_objects)} test objects\n")
    print("| attribute | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for attribute, scores in results.items():
        print(f"| {attribute} | " + " | ".join(f"{scores[c]:.1f}" for c in columns) + " |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
