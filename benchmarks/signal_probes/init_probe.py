"""Does a small causal transformer learn to read a perfect image for a yes/no answer, and what decides how soon?
(issue 21, probe 10's follow-up)

A stand-alone check, outside the VLM: the question's words, then the scene's ground truth on the encoders' 6x6 grid
(symbolic_probe.py's cells, through a linear layer), then one query position (``--read query``; ``last-cell``
reads the answer from the last grid cell instead, as the VLM with the image after the question does), whose output
a yes/no head reads. The questions are existence questions that one attribute decides ("is there a red object",
"is there a star", a value present or absent with equal odds), or two (``--attributes two``: "is there a red
circle", absent pairs drawn as the benchmark's POPE draws them), from the benchmark's training scenes; the accuracy
is measured on those of its test scenes. The trunk is 2 causal layers of width 128: PyTorch's
``nn.TransformerEncoderLayer`` with its own initialization (``--trunk torch``) or a Hugging Face Llama initialized at
``--init-std`` (``--trunk llama``; Llama's default is 0.02). The word embeddings start at ``--init-std`` either way.

    python benchmarks/signal_probes/init_probe.py --data DATASET_DIR --trunk llama --init-std 0.088 --out FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from symbolic_probe import FEATURES, cell_features
from torch import nn

from ssmvlm.data.shapes.questions import POPE_VARIANTS, absent_combination
from ssmvlm.data.shapes.scene import COLORS, SHAPES, Scene
from ssmvlm.data.transforms import build_image_transform

WIDTH, LAYERS, HEADS = 128, 2, 4


def existence_questions(data_dir: Path, split: str, seed: int, attributes: str) -> list[tuple[str, np.ndarray, bool]]:
    """Per scene, present or absent with equal odds: ``one``, a colour and a shape question; ``two``, two
    colour-shape questions whose absent pairs are drawn as the benchmark's POPE draws them (a colour and a shape
    that occur on different objects, one of them, or neither)."""
    rng = np.random.default_rng(seed)
    transform = build_image_transform("letterbox", 96)
    out = []
    for record in json.loads((data_dir / split / "scenes.json").read_text()):
        cells = cell_features(record, transform)
        if attributes == "two":
            scene = Scene.from_json(record, split)
            for _ in range(2):
                if rng.random() < 0.5:
                    target = scene.objects[int(rng.integers(len(scene.objects)))]
                    color, shape, answer = target.color, target.shape, True
                else:
                    variant = POPE_VARIANTS[int(rng.integers(len(POPE_VARIANTS)))]
                    (color, shape), answer = absent_combination(scene, rng, variant), False
                out.append((f"is there a {color} {shape}", cells, answer))
            continue
        for attribute, values, template in (
            ("color", list(COLORS), "is there a {} object"),
            ("shape", list(SHAPES), "is there a {}"),
        ):
            present = sorted({o[attribute] for o in record["objects"]})
            answer = bool(rng.random() < 0.5)
            options = present if answer else [v for v in values if v not in present]
            out.append((template.format(rng.choice(options)), cells, answer))
    return out


class Reader(nn.Module):
    def __init__(self, vocabulary: int, length: int, trunk: str, init_std: float, read: str) -> None:
        super().__init__()
        self.read = read
        self.words = nn.Embedding(vocabulary, WIDTH)
        self.cells = nn.Linear(FEATURES, WIDTH)
        self.positions = nn.Parameter(torch.randn(length, WIDTH) * 0.02)
        self.head = nn.Linear(WIDTH, 1)
        if trunk == "llama":
            from transformers import LlamaConfig, LlamaModel

            config = LlamaConfig(
                vocab_size=vocabulary,
                hidden_size=WIDTH,
                intermediate_size=344,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                num_key_value_heads=HEADS,
                initializer_range=init_std,
            )
            self.llama = LlamaModel(config)
        else:
            layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 344, 0.0, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        nn.init.normal_(self.words.weight, std=init_std)

    def forward(self, words: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        parts = [self.words(words), self.cells(cells)]
        if self.read == "query":
            parts.append(torch.zeros(len(words), 1, WIDTH))
        x = torch.cat(parts, 1)
        x = x + self.positions[: x.shape[1]]
        if hasattr(self, "llama"):
            hidden = self.llama(inputs_embeds=x).last_hidden_state
        else:
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
            hidden = self.encoder(x, mask=mask, is_causal=True)
        return self.head(hidden[:, -1]).squeeze(-1)


def tensors(items, vocabulary: dict[str, int], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    words = torch.zeros(len(items), length, dtype=torch.long)
    for row, (question, _, _) in enumerate(items):
        ids = [vocabulary[w] for w in question.split()]
        words[row, : len(ids)] = torch.tensor(ids)
    cells = torch.from_numpy(np.stack([c for _, c, _ in items]))
    return words, cells, torch.tensor([a for _, _, a in items], dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a ShapeScenes dataset folder (train/, test/)")
    parser.add_argument("--trunk", choices=("torch", "llama"), default="llama")
    parser.add_argument("--init-std", type=float, default=0.02)
    parser.add_argument("--read", choices=("query", "last-cell"), default="query")
    parser.add_argument(
        "--attributes", choices=("one", "two"), default="one", help="how many attributes decide each question"
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="a JSON file for the loss curve and the accuracy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = existence_questions(args.data, "train", args.seed, args.attributes)
    test = existence_questions(args.data, "test", args.seed + 1, args.attributes)
    words = sorted({w for question, _, _ in train + test for w in question.split()})
    vocabulary = {w: i + 1 for i, w in enumerate(words)}  # 0 pads the shorter questions
    length = max(len(q.split()) for q, _, _ in train + test)
    train_words, train_cells, train_answers = tensors(train, vocabulary, length)
    test_words, test_cells, test_answers = tensors(test, vocabulary, length)
    model = Reader(len(vocabulary) + 1, length + 37, args.trunk, args.init_std, args.read)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    generator = torch.Generator().manual_seed(args.seed)
    curve, started = [], time.time()
    for step in range(1, args.steps + 1):
        rows = torch.randint(0, len(train_answers), (args.batch,), generator=generator)
        logits = model(train_words[rows], train_cells[rows])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, train_answers[rows])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0:
            curve.append({"step": step, "loss": round(loss.item(), 4)})
            print(json.dumps(curve[-1]), flush=True)
    with torch.no_grad():
        accuracy = ((model(test_words, test_cells) > 0).float() == test_answers).float().mean().item()
    result = {**vars(args), "data": str(args.data), "out": None, "curve": curve, "test_accuracy": 100 * accuracy}
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps({"test_accuracy": round(100 * accuracy, 1), "test_questions": len(test_answers)}))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
