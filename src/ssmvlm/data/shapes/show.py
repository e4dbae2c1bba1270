"""A PNG contact sheet of ShapeScenes samples: images enlarged, referring boxes drawn, Q/A pairs listed."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ssmvlm.data.images import open_image
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import atomic_write_bytes, read_json

CELL = 300  # pixels for the longer side of each enlarged image
TEXT_LINES = 13
LINE_HEIGHT = 15
BOX_COLORS = ((255, 255, 255), (0, 0, 0), (255, 0, 255))


def _load_split(
    root: Path, split: str
) -> tuple[list[dict], dict[int, list[tuple[str, str, str]]], dict[int, list]]:
    scenes = read_json(root / split / "scenes.json")
    questions = read_json(root / split / "vqa_questions.json")["questions"]
    annotations = {
        a["question_id"]: a for a in read_json(root / split / "vqa_annotations.json")["annotations"]
    }
    qa: dict[int, list[tuple[str, str, str]]] = {}
    for question in questions:
        annotation = annotations[question["question_id"]]
        qa.setdefault(question["image_id"], []).append(
            (annotation["question_type"], question["question"], annotation["multiple_choice_answer"])
        )
    refs: dict[int, list] = {}
    for ref in read_json(root / split / "refs.json"):
        refs.setdefault(ref["image_id"], []).append(ref)
    return scenes, qa, refs


def render_grid(root: str | Path, split: str = "val", count: int = 8, columns: int = 4) -> Image.Image:
    """The first ``count`` scenes of ``split`` as one image."""
    root = Path(root)
    if not (root / split / "scenes.json").is_file():
        raise DataError(
            root / split / "scenes.json", "not found: is this a ShapeScenes folder with that split?"
        )
    scenes, qa, refs = _load_split(root, split)
    scenes = scenes[:count]
    if not scenes:
        raise DataError(root / split / "scenes.json", "holds no scenes")
    font = ImageFont.load_default(size=12)
    columns = min(columns, len(scenes))
    rows = -(-len(scenes) // columns)
    cell_height = CELL + TEXT_LINES * LINE_HEIGHT + 10
    sheet = Image.new("RGB", (columns * (CELL + 10), rows * cell_height), (250, 250, 250))
    for position, scene in enumerate(scenes):
        left, top = (position % columns) * (CELL + 10), (position // columns) * cell_height
        _draw_cell(
            sheet,
            left,
            top,
            root,
            scene,
            qa.get(scene["image_id"], []),
            refs.get(scene["image_id"], []),
            font,
        )
    return sheet


def _draw_cell(
    sheet: Image.Image,
    left: int,
    top: int,
    root: Path,
    scene: dict,
    qa: list,
    refs: list,
    font: ImageFont.FreeTypeFont,
) -> None:
    image = open_image(scene["file_name"], root)
    scale = CELL / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    boxes = {o["id"]: o["box"] for o in scene["objects"]}
    lines = [
        f"{Path(scene['file_name']).name}  {scene['width']}x{scene['height']}, "
        f"{len(scene['objects'])} objects"
    ]
    for number, ref in enumerate(refs, start=1):
        object_id = (ref["ann_id"] % 100) - 1
        x1, y1, x2, y2 = (v * scale for v in boxes[object_id])
        color = BOX_COLORS[(number - 1) % len(BOX_COLORS)]
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=color, width=2)
        draw.text((x1 + 2, y1 + 1), f"R{number}", fill=color, font=font)
        lines += textwrap.wrap(f"R{number}: {ref['sentences'][0]['sent']}", 48)
    for question_type, question, answer in qa:
        lines += textwrap.wrap(f"[{question_type}] {question} = {answer}", 48)
    sheet.paste(image, (left, top))
    text = ImageDraw.Draw(sheet)
    for index, line in enumerate(lines[:TEXT_LINES]):
        text.text((left + 2, top + CELL + 4 + index * LINE_HEIGHT), line, fill=(20, 20, 20), font=font)


def save_grid(root: str | Path, out: str | Path, split: str = "val", count: int = 8) -> Path:
    import io

    buffer = io.BytesIO()
    render_grid(root, split, count).save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())
    return Path(out)
