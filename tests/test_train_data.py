"""A tiny LLaVA-format dataset for the VLM and training tests: one coloured shape per image."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square")


def make_mini_llava(root: Path, count: int = 32, *, size: int = 64, text_only: int = 0) -> Path:
    """Write ``root/images/*.png`` and ``root/llava.json``: ``count`` image records whose answers depend only on
    the image, then ``text_only`` records without an image."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        color = list(COLORS)[index % len(COLORS)]
        shape = SHAPES[(index // len(COLORS)) % len(SHAPES)]
        image = Image.new("RGB", (size + 16 * (index % 2), size), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        box = (12 + index % 7, 10 + index % 5, size - 12, size - 10)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
        name = f"images/{index:04d}.png"
        image.save(root / name)
        question = "What color is the shape?" if index % 3 else "Which shape is shown?"
        answer = color if index % 3 else shape
        records.append(
            {
                "id": f"mini-{index}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    for index in range(text_only):
        records.append(
            {
                "id": f"text-{index}",
                "conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "hello"}],
            }
        )
    path = root / "llava.json"
    path.write_text(json.dumps(records))
    return path


def test_mini_llava_is_loadable(tmp_path: Path) -> None:
    from ssmvlm.data.llava import load_llava_records

    records = load_llava_records(make_mini_llava(tmp_path, 8, text_only=2))
    assert len(records) == 10 and all(r.image is not None and r.image.is_file() for r in records[:8])
    assert records[-1].image is None


def test_split_turns_gives_one_sample_per_question(tmp_path: Path) -> None:
    from ssmvlm.data.llava import LlavaRecord
    from ssmvlm.train.dataset import split_into_turns

    record = LlavaRecord("r1", tmp_path / "a.png", [("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", "a2")])
    split = split_into_turns([record])
    assert [(r.id, r.image, r.turns) for r in split] == [
        ("r1#0", tmp_path / "a.png", [("human", "q1"), ("gpt", "a1")]),
        ("r1#1", tmp_path / "a.png", [("human", "q2"), ("gpt", "a2")]),
    ]
