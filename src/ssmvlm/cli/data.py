"""`ssmvlm data`: Make, inspect and validate datasets (ShapeScenes, LLaVA, evaluation sets)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Make, inspect and validate datasets (ShapeScenes, LLaVA, evaluation sets).", no_args_is_help=True
)


@app.command("make-shapes")
def make_shapes(
    out: Path = typer.Option(..., "--out", help="Output folder (layout: docs/ARCHITECTURE.md)."),
    size: int = typer.Option(..., "--size", help="Number of scenes over all splits."),
    image_size: int = typer.Option(..., "--image-size", help="Longer image side in pixels."),
    seed: int = typer.Option(..., "--seed", help="Seed: same seed and options give byte-identical files."),
    splits: str = typer.Option(
        "train=0.8,val=0.1,test=0.1", "--splits", help="Split shares, e.g. train=0.9,val=0.1."
    ),
    difficulty: str = typer.Option(
        "medium", "--difficulty", help="Preset of the knobs: easy, medium or hard."
    ),
    min_objects: int | None = typer.Option(None, "--min-objects", help="Fewest objects per scene."),
    max_objects: int | None = typer.Option(None, "--max-objects", help="Most objects per scene (at most 8)."),
    clutter: str | None = typer.Option(
        None, "--clutter", help="Distractor strokes: none, low, medium, high."
    ),
    noise: int | None = typer.Option(None, "--noise", help="Pixel grain amplitude (0–64, in 0–255 units)."),
    non_square_share: float | None = typer.Option(
        None, "--non-square-share", help="Share of 4:3, 16:9 and 3:4 images (default 0.4)."
    ),
    workers: int = typer.Option(1, "--workers", help="Processes; the output does not depend on it."),
) -> None:
    """Generate the ShapeScenes grounded-VQA benchmark (images, masks, LLaVA, VQAv2, POPE, REFER, COCO)."""
    from ssmvlm.data.shapes.generate import generate_shapescenes, parse_splits
    from ssmvlm.data.shapes.scene import SceneConfig
    from ssmvlm.utils.errors import ConfigError
    from ssmvlm.utils.progress import console

    try:
        config = SceneConfig.from_difficulty(
            difficulty,
            min_objects=min_objects,
            max_objects=max_objects,
            clutter=clutter,
            noise=noise,
            non_square_share=non_square_share,
        )
    except ValueError as exc:
        raise ConfigError("make-shapes", str(exc)) from None
    manifest = generate_shapescenes(
        out,
        size=size,
        image_size=image_size,
        seed=seed,
        splits=parse_splits(splits),
        config=config,
        workers=workers,
    )
    console.print(f"wrote {size} scenes to {out} (manifest: {manifest})", highlight=False)


@app.command()
def show(
    root: Path = typer.Argument(..., help="A ShapeScenes folder."),
    split: str = typer.Option("val", "--split", help="Which split to show."),
    n: int = typer.Option(8, "--n", help="How many scenes (the first n)."),
    out: Path = typer.Option(Path("shapescenes_grid.png"), "--out", help="PNG file to write."),
) -> None:
    """Draw the first scenes of a split, their referring boxes and question/answer pairs, into a PNG grid."""
    from ssmvlm.data.shapes.show import save_grid
    from ssmvlm.utils.progress import console

    console.print(f"wrote {save_grid(root, out, split, n)}", highlight=False)


@app.command()
def validate(
    path: Path = typer.Argument(
        ..., help="A LLaVA conversation JSON file, or a ShapeScenes folder (every split)."
    ),
    image_root: Path | None = typer.Option(
        None,
        "--image-root",
        help="Folder image paths are relative to (default: the ShapeScenes folder, else the JSON's folder).",
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Count bad records in a warning instead of failing."
    ),
) -> None:
    """Check a LLaVA-format file: JSON, keys and types, turn order, image paths, answer boxes, and that every
    image decodes (what training would trip on)."""
    from rich.markup import escape
    from rich.table import Table

    from ssmvlm.data.images import describe_skipped_images, undecodable_images
    from ssmvlm.data.llava import LlavaLoadReport, load_llava_records, parse_boxes
    from ssmvlm.utils.errors import DataError
    from ssmvlm.utils.progress import console

    files = sorted(path.glob("*/llava.json")) if path.is_dir() else [path]
    if not files:
        raise DataError(path, "no */llava.json files in this folder")
    table = Table(title="LLaVA data")
    for column in ("file", "records", "skipped", "undecodable images", "with image", "turns", "box answers"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for json_file in files:
        report = LlavaLoadReport()
        records = load_llava_records(json_file, image_root, skip_bad=skip_bad, report=report)
        with_images = [r for r in records if r.image is not None]
        bad = undecodable_images([r.image for r in with_images])  # type: ignore[misc]
        if bad and not skip_bad:
            first = min(bad)
            raise DataError(json_file, bad[first], record=f"id {with_images[first].id!r}", field="image")
        if bad:
            reasons = [f"record id {with_images[i].id!r}: {bad[i]}" for i in sorted(bad)]
            console.print(
                f"[yellow]warning:[/yellow] {escape(str(json_file))}: " + escape(describe_skipped_images(reasons)),
                highlight=False,
                soft_wrap=True,
            )
            records = [r for i, r in enumerate(with_images) if i not in bad] + [r for r in records if r.image is None]
        turns = sum(len(r.turns) for r in records)
        boxes = sum(bool(parse_boxes(text)) for r in records for role, text in r.turns if role == "gpt")
        with_image = sum(r.image is not None for r in records)
        table.add_row(
            str(json_file),
            str(len(records)),
            str(report.skipped),
            str(len(bad)),
            str(with_image),
            str(turns),
            str(boxes),
        )
    console.print(table)
