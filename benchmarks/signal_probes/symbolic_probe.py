"""Can the study's tiny LLM answer ShapeScenes questions at all, given a perfect image? (issue 21)

Replaces the encoder by the scene's ground truth on the encoders' own 6x6 token grid: each grid cell gets the
one-hot colour, shape and size of the object covering most of it and that object's box (or an "empty" flag),
through a fresh MLP connector into the LLM (`--cells words`: an ideal connector instead, the sum of the LLM's own
embeddings of the cell's size, colour and shape words). The VLM is trained on the dataset's own training split with
the study's recipe and evaluated by the study's evaluation (ShapeScenes-VQA, -POPE, -RefExp with the blind and
prior controls). What it separates: whether the from-scratch LLM or the encoder limits the VLM's scores.

    python benchmarks/signal_probes/symbolic_probe.py --data DATASET_DIR --out DIR --steps 4640 --batch 128 \
        --lr 2.8e-3 [--cells words] [--tie] [--llm tiny-llama-10m | --llm-shape 128,2,4] [--init-std 0.088] \
        [--image-position before-answer] [--loss-reduction sample] [--questions '^Is there'] [--device cuda] \
        [--save-llm] [--box-frame model]

``--save-llm`` leaves ``DIR/llm``: the trained LLM and its tokenizer as a local Hugging Face directory, which
``model.llm`` accepts (a VLM starting from an LLM that learned the question families on symbolic scenes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from ssmvlm.connectors import build_connector
from ssmvlm.data.box_frames import BOX_FRAMES, answers_in_model_frame
from ssmvlm.data.images import open_image
from ssmvlm.data.llava import load_llava_records
from ssmvlm.data.shapes.scene import COLORS, SHAPES, SIZES
from ssmvlm.data.transforms import build_image_transform
from ssmvlm.eval.runner import evaluate_model
from ssmvlm.train.dataset import build_conversation_data, collate, global_batch_indices, split_into_turns
from ssmvlm.train.loop import build_optimizer
from ssmvlm.train.recipe import RECIPES
from ssmvlm.train.warmup import CELL_FEATURES, scene_grid
from ssmvlm.utils.seed import seed_everything
from ssmvlm.vlm.builder import VLMConfig, build_vlm, prepare_tokenizer
from ssmvlm.vlm.llm import TINY_LLAMA_PRESETS, TinyLlamaPreset

GRID = 6
FEATURES = CELL_FEATURES


def cell_features(scene: dict, transform, grid: int = GRID) -> np.ndarray:
    """(grid*grid, FEATURES): per cell of the model frame, the object covering most of it (the study's warm-up
    grid, ``ssmvlm.train.warmup.scene_grid``)."""
    return scene_grid(scene, transform, grid).numpy()


def scene_features(data_dir: Path, split: str, transform) -> dict[str, np.ndarray]:
    scenes = json.loads((data_dir / split / "scenes.json").read_text())
    return {scene["file_name"]: cell_features(scene, transform) for scene in scenes}


class SymbolicModel:
    """The evaluation's model interface over a VLM whose 'encoder' returns the scene's symbolic grid."""

    def __init__(self, vlm, by_pixels: dict[str, torch.Tensor]) -> None:
        self.vlm = vlm
        self.by_pixels = by_pixels
        self.pending: torch.Tensor | None = None
        vlm.encode_images = lambda pixels: self.pending  # the grid of the images just given

    @property
    def image_transform(self):
        return self.vlm.image_transform

    @property
    def box_frame(self) -> str:
        return self.vlm.box_frame

    def _stash(self, images) -> None:
        self.pending = torch.stack([self.by_pixels[_key(image)] for image in images if image is not None])

    def generate(self, images, prompts, *, max_new_tokens: int, blind: bool = False):
        self._stash(images)
        return self.vlm.generate(images, prompts, max_new_tokens=max_new_tokens, blind=blind)

    def first_token_probs(self, images, prompts, candidates, *, blind: bool = False):
        self._stash(images)
        return self.vlm.first_token_probs(images, prompts, candidates, blind=blind)

    def candidate_token_id(self, candidate: str) -> int:
        return self.vlm.candidate_token_id(candidate)

    @property
    def tokenizer(self):
        return self.vlm.tokenizer


class WordCells(torch.nn.Module):
    """An ideal connector: each cell becomes the sum of the LLM's own input embeddings of its size, colour and shape
    words (as the questions spell them), plus a learned projection of its box, or a learned "empty" vector."""

    def __init__(self, embedding: torch.nn.Embedding, tokenizer) -> None:
        super().__init__()
        self.box = torch.nn.Linear(4, embedding.embedding_dim)
        self.empty = torch.nn.Parameter(torch.zeros(embedding.embedding_dim))
        self.embedding = [embedding]  # a list: the LLM owns (and trains) it, this module only reads it
        words = [*COLORS, *SHAPES, *SIZES]
        pooling = torch.zeros(len(words), embedding.num_embeddings)
        for row, word in enumerate(words):
            ids = tokenizer(" " + word, add_special_tokens=False).input_ids
            pooling[row, ids] = 1.0 / len(ids)
        self.register_buffer("pooling", pooling)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        attributes, box, empty = cells[..., :-5], cells[..., -5:-1], cells[..., -1:]
        words = self.pooling.to(attributes.dtype) @ self.embedding[0].weight.to(attributes.dtype)
        return attributes @ words + self.box(box) + empty * self.empty


def keep_turns(records: list, pattern: re.Pattern) -> list:
    """The one-turn records whose question matches ``pattern``."""
    return [r for r in records if pattern.search(r.turns[0][1])]


def _key(image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a ShapeScenes dataset folder (train/, test/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=4640)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2.8e-3)
    parser.add_argument("--llm", default="tiny-llama-2m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tie", action="store_true", help="the LM head tied to the input embedding")
    parser.add_argument(
        "--image-position",
        choices=("after-question", "after-bos", "before-answer"),
        default="after-question",
    )
    parser.add_argument("--init-std", type=float, default=None, help="the LLM's weight std at initialization")
    parser.add_argument("--loss-reduction", choices=("token", "sample", "sqrt"), default="token")
    parser.add_argument(
        "--llm-shape",
        default=None,
        help="HIDDEN,LAYERS,HEADS: a tiny Llama of this shape (MLP 2.7x, the presets' vocabulary) instead of --llm",
    )
    parser.add_argument(
        "--cells",
        choices=("onehot", "words"),
        default="onehot",
        help="onehot: the grid through a fresh MLP connector; words: each cell as the LLM's own word embeddings",
    )
    parser.add_argument("--save-llm", action="store_true")
    parser.add_argument(
        "--box-frame", choices=BOX_FRAMES, default="raw", help="the frame of the box answers (model.box_frame)"
    )
    parser.add_argument(
        "--questions", default=None, help="train only on the turns whose question matches this regular expression"
    )
    args = parser.parse_args()
    if (args.out / "eval" / "results.json").is_file():
        return  # finished before (a rerun of the probe on the same machine)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    seed_everything(args.seed)

    if args.llm_shape:
        hidden, layers, heads = (int(v) for v in args.llm_shape.split(","))
        args.llm = f"tiny-llama-{hidden}x{layers}"
        TINY_LLAMA_PRESETS[args.llm] = TinyLlamaPreset(hidden, layers, heads, heads, 344 * hidden // 128, 1024)
    records = load_llava_records(args.data / "train" / "llava.json", args.data)
    if args.questions:
        records = keep_turns(split_into_turns(records), re.compile(args.questions))
    config = VLMConfig(
        backbone="vit_nano",
        image_size=96,
        llm=args.llm,
        image_position=args.image_position,
        tie_word_embeddings=args.tie,
        llm_init_std=args.init_std,
        box_frame=args.box_frame,
    )
    if args.box_frame == "model":
        records = answers_in_model_frame(records, build_image_transform(config.resize_strategy, config.image_size))
    tokenizer = prepare_tokenizer(config, args.out, (r.turns for r in records))
    vlm = build_vlm(config, tokenizer, args.seed)
    if args.cells == "words":
        vlm.connector = WordCells(vlm.llm.get_input_embeddings(), tokenizer)
    else:
        vlm.connector = build_connector("gelu-mlp", FEATURES, vlm.llm.config.hidden_size)
    vlm.to(device)
    transform = vlm.image_transform
    data = build_conversation_data(
        records, tokenizer, vlm.prompt_format, max_length=2048, stage="no-align", source="train", skip_bad=False,
        split_turns=True,
    )
    vlm.check_answer_tags(data.samples, args.data / "train" / "llava.json")
    train_grid = scene_features(args.data, "train", transform)
    table = torch.stack([torch.from_numpy(train_grid[str(p.relative_to(args.data))]) for p in data.image_paths])

    # The preset's recipe (`shapes`) at this run's batch, rate and steps, with the training loop's own optimizer.
    recipe = dataclasses.replace(
        RECIPES["shapes"], learning_rate=args.lr, global_batch_size=args.batch, max_steps=args.steps
    )
    optimizer = build_optimizer(vlm, recipe, device)
    schedule = get_cosine_schedule_with_warmup(optimizer, recipe.warmup_steps(args.steps), args.steps)
    trainable = [p for p in vlm.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(data.samples) / args.batch)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    vlm.train()
    started = time.time()
    log = []
    for step in range(args.steps):
        indices = global_batch_indices(len(data.samples), args.batch, step, steps_per_epoch, args.seed)
        batch = collate([data.samples[i] for i in indices], tokenizer.pad_token_id)
        with autocast:
            out = vlm(
                batch.input_ids.to(device),
                batch.attention_mask.to(device),
                batch.labels.to(device),
                vision_features=table[batch.image_indices].to(device),
                prompt_lengths=batch.prompt_lengths,
                loss_reduction=args.loss_reduction,
            )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, recipe.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0 or step == 0:
            log.append({"step": step + 1, "loss": out.loss.item(), "s": time.time() - started})
            print(json.dumps(log[-1]), flush=True)
    (args.out / "train_log.json").write_text(json.dumps(log))
    if args.save_llm:
        vlm.llm.save_pretrained(str(args.out / "llm"))
        tokenizer.save_pretrained(str(args.out / "llm"))

    vlm.eval()
    test_grid = scene_features(args.data, "test", transform)
    by_pixels = {
        _key(open_image(args.data / name)): torch.from_numpy(grid).to(device) for name, grid in test_grid.items()
    }
    results = evaluate_model(
        SymbolicModel(vlm, by_pixels),
        ["shapes-vqa", "shapes-pope", "shapes-refexp"],
        args.data,
        split="test",
        out_dir=args.out / "eval",
        limit=args.limit,
        batch_size=64,
        max_new_tokens=24,
        show_progress=False,
    )
    print(json.dumps({k: v.get("score") for k, v in results["tasks"].items()} if "tasks" in results else results))


if __name__ == "__main__":
    main()
