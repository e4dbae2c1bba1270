"""Can the from-scratch LLM answer yes/no questions from the image? An A/B on one frozen encoder.

A one-object ShapeScenes set (96 px, the `quick` preset's scenes); the VLM trains on its colour and shape questions
plus, per training image, the POPE `random` and `popular` probes (two "yes", two "no": a balanced yes/no prior),
then is evaluated on the test split (VQA per question family, ShapeScenes-POPE). Variants, one recipe otherwise:

- ``plain``: the tiny LLM as the presets had it (cased BPE, separate LM head);
- ``shared``: ``model.tokenizer_lowercase`` and ``model.tie_word_embeddings`` — "red" in a question and "Red" as an
  answer are one token with one vector, in the input and in the output;
- ``lowercase``, ``tied``: one of the two knobs alone.

    python benchmarks/signal_probes/yes_no_probe.py --out DIR \\
        --checkpoint runs/quick/runs/pretrain/CELL/backbone.safetensors --backbone mambavision_nano

(the checkpoint: a `quick` study's pretraining cell of that backbone). ``--data`` takes an existing ShapeScenes
folder instead (e.g. a `paper` study's benchmark cell, three-object scenes); ``--also DIR`` adds another set's
training split to the training data (evaluation stays on ``--data``'s test split). Prints a Markdown table;
writes ``DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

VARIANTS = {
    "plain": [],
    "shared": ["model.tokenizer_lowercase=true", "model.tie_word_embeddings=true"],
    "lowercase": ["model.tokenizer_lowercase=true"],  # one knob at a time
    "tied": ["model.tie_word_embeddings=true"],
}
PROMPT_SUFFIX = "\nAnswer the question using a single word or phrase."


def ssmvlm(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ssmvlm.cli", *args], check=True)


def training_records(data: Path, image_root: Path) -> list[tuple[str, str, str]]:
    """(image, question, answer) of the training split's colour and shape questions and its balanced POPE probes;
    image paths relative to ``image_root`` (a folder above ``data``)."""
    prefix = data.resolve().relative_to(image_root)
    records = []
    for record in json.loads((data / "train" / "llava.json").read_text()):
        turns = record["conversations"]
        for question, answer in zip(turns[::2], turns[1::2], strict=True):
            text = question["value"].removeprefix("<image>\n")
            if text.startswith(("What color", "What shape")):
                records.append((str(prefix / record["image"]), text, answer["value"]))
    probes: dict[str, dict[tuple[str, str], str]] = {}
    for variant in ("random", "popular"):
        for line in (data / "train" / f"pope_{variant}.jsonl").read_text().splitlines():
            probe = json.loads(line)
            probes.setdefault(str(prefix / probe["image"]), {})[(variant, probe["label"])] = probe["text"]
    for image, texts in probes.items():
        for key in sorted(texts):
            records.append((image, texts[key] + PROMPT_SUFFIX, key[1].capitalize()))
    return records


def as_llava(records: list[tuple[str, str, str]]) -> list[dict]:
    return [
        {
            "id": f"probe-{index}",
            "image": image,
            "conversations": [{"from": "human", "value": f"<image>\n{text}"}, {"from": "gpt", "value": answer}],
        }
        for index, (image, text, answer) in enumerate(records)
    ]


def train_config(args: argparse.Namespace, image_root: Path, train_json: Path) -> dict:
    return {
        "model": {
            "backbone": args.backbone,
            "checkpoint": str(args.checkpoint),
            "image_size": 96,
            "resize_strategy": "letterbox",
            "connector": "gelu-mlp",
            "llm": "tiny-llama-1m",
            "prompt_format": "plain",
            "image_position": "after-question",
        },
        "recipe": "shapes",
        "optim": {"max_steps": args.steps},
        "data": {"train_json": str(train_json), "image_root": str(image_root), "split_turns": True},
        "seed": args.seed,
        "device": "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the frozen encoder's backbone.safetensors")
    parser.add_argument("--backbone", default="mambavision_nano")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=6000)
    parser.add_argument("--data", type=Path, help="an existing ShapeScenes folder (default: a one-object set)")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another ShapeScenes folder whose training split joins the training set (repeatable)")
    parser.add_argument("--variants", default="plain,shared")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    data = args.data or args.out / "data"
    if not (data / "manifest.json").is_file():
        ssmvlm("data", "make-shapes", "--out", str(data), "--size", str(args.scenes), "--image-size", "96",
               "--seed", "5", "--difficulty", "easy", "--min-objects", "1", "--max-objects", "1",
               "--clutter", "none", "--non-square-share", "0", "--workers", str(args.threads))  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    train_json = args.out / "train.json"
    folders = [data.resolve(), *(folder.resolve() for folder in args.also)]
    image_root = Path(os.path.commonpath(folders))
    records = [record for folder in folders for record in training_records(folder, image_root)]
    train_json.write_text(json.dumps(as_llava(records)))
    config_file = args.out / "train.yaml"
    config_file.write_text(yaml.safe_dump(train_config(args, image_root, train_json)))
    summary = {}
    for variant in args.variants.split(","):
        run = args.out / variant
        threads = ["--threads", str(args.threads)]
        ssmvlm("train", "--out", str(run), "--config", str(config_file), "--resume", "--quiet", *threads,
               *VARIANTS[variant])  # fmt: skip
        ssmvlm("evaluate", "--run", str(run), "--tasks", "shapes-vqa,shapes-pope", "--data", str(data),
               "--limit", "600", "--no-controls", "--max-new-tokens", "8", *threads)  # fmt: skip
        tasks = json.loads((run / "eval" / "results.json").read_text())["tasks"]
        families = {k: v["score"] for k, v in tasks["shapes-vqa"]["breakdown"].items()}
        summary[variant] = {"vqa": tasks["shapes-vqa"]["score"], "pope": tasks["shapes-pope"]["score"], **families}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("| variant | VQA | colour | shape | exist | ShapeScenes-POPE |\n|---|---|---|---|---|---|")
    for variant, scores in summary.items():
        cells = [scores[key] for key in ("vqa", "color", "shape", "exist", "pope")]
        print(f"| {variant} | " + " | ".join(f"{value:.1f}" for value in cells) + " |")


if __name__ == "__main__":
    main()
