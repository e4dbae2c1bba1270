"""Drawing a scene: textured background, clutter, shapes, grain; instance and semantic masks; PNG bytes.

All per-pixel work is numpy or PIL; Python only loops over objects and strokes. Tight boxes and areas are read
back from the rasterized instance mask, so labels describe exactly the pixels drawn.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ssmvlm.data.shapes.scene import CLUTTER_LEVELS, COLORS, SHAPES, PlannedObject, SceneConfig, SceneObject

COLOR_JITTER = 14  # per-channel jitter of an object's colour, small enough that names stay unambiguous


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    return [
        (
            (1.0 if k % 2 == 0 else inner) * math.sin(math.pi * k / points),
            -(1.0 if k % 2 == 0 else inner) * math.cos(math.pi * k / points),
        )
        for k in range(2 * points)
    ]


def _regular(sides: int, phase: float) -> list[tuple[float, float]]:
    return [
        (math.cos(phase + 2 * math.pi * k / sides), math.sin(phase + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def _fill_box(vertices: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Stretch a polygon to span [-1, 1] on both axes, so every shape of a size class has the same extent."""
    xs, ys = [x for x, _ in vertices], [y for _, y in vertices]
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    sx, sy = (max(xs) - min(xs)) / 2, (max(ys) - min(ys)) / 2
    return [((x - cx) / sx, (y - cy) / sy) for x, y in vertices]


_ARM = 0.34
UNIT_SHAPES: dict[str, list[tuple[float, float]]] = {
    "circle": _regular(32, 0.0),  # drawn as an ellipse; the polygon serves COCO segmentation
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (1, 1), (-1, 1)],
    "star": _fill_box(_star()),
    "diamond": [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)],  # narrow, so that it never reads as a rotated square
    "cross": [
        (-_ARM, -1),
        (_ARM, -1),
        (_ARM, -_ARM),
        (1, -_ARM),
        (1, _ARM),
        (_ARM, _ARM),
        (_ARM, 1),
        (-_ARM, 1),
        (-_ARM, _ARM),
        (-1, _ARM),
        (-1, -_ARM),
        (-_ARM, -_ARM),
    ],
    "hexagon": _fill_box(_regular(6, math.pi / 6)),
}
assert set(UNIT_SHAPES) == set(SHAPES)


_UNIT_ARRAYS = {name: np.array(points, dtype=np.float64) for name, points in UNIT_SHAPES.items()}


def polygon(planned: PlannedObject) -> list[tuple[float, float]]:
    """The object's outline in pixel coordinates (rotation counter-clockwise on screen), 2 decimals."""
    angle = math.radians(planned.rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]]) * (planned.extent / 2)
    points = _UNIT_ARRAYS[planned.shape] @ rotation + (planned.cx, planned.cy)
    return [tuple(point) for point in np.round(points, 2).tolist()]


@dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8
    semantic_mask: np.ndarray  # (H, W) uint8: 0 background, k = SHAPES[k - 1]
    objects: list[SceneObject]
    areas: list[int]
    polygons: list[list[tuple[float, float]]]


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random colour field: a coarse grid of muted colours, bilinearly upsampled."""
    cells_x, cells_y = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    base = rng.integers(60, 190)
    tint = rng.integers(-30, 31, size=3)
    grid = (
        base
        + tint
        + rng.integers(-35, 36, size=(cells_y, cells_x, 1))
        + rng.integers(-18, 19, size=(cells_y, cells_x, 3))
    )
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB")
    # Smooth at the grain's cell resolution, then cells enlarged: the steps are far below the grain's
    # amplitude, and this is 4× cheaper than a full-resolution bilinear upsampling.
    cell = grain_cell(max(width, height))
    cells_w, cells_h = -(-width // cell), -(-height // cell)
    field = small.resize((cells_w, cells_h), Image.Resampling.BILINEAR)
    return field.resize((cells_w * cell, cells_h * cell), Image.Resampling.NEAREST).crop(
        (0, 0, width, height)
    )


def _jittered(rng: np.random.Generator, names: list[str]) -> list[tuple[int, int, int]]:
    """The named colours, each with its own small per-channel jitter (one draw for all of them)."""
    base = np.array([COLORS[name] for name in names], dtype=np.int16).reshape(-1, 3)
    jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=base.shape, dtype=np.int16)
    return [tuple(row) for row in np.clip(base + jitter, 0, 255).tolist()]


def _draw_clutter(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, level: str
) -> None:
    """Thin strokes and dots in object colours: they carry no label and are far smaller than any object."""
    count = CLUTTER_LEVELS[level]
    if not count:
        return
    short = min(width, height)
    line_width = max(1, round(short / 110))
    dot_radius = max(1.0, short * 0.012)
    palette = list(COLORS)
    colors = _jittered(rng, [palette[i] for i in rng.integers(len(palette), size=count)])
    params = rng.random((count, 5)).tolist()  # x, y, is-line, length, angle
    for color, (u, v, kind, length, angle) in zip(colors, params, strict=True):
        x, y = u * width, v * height
        if kind < 0.5:
            length = (0.1 + 0.2 * length) * short
            end = (x + length * math.cos(math.pi * angle), y + length * math.sin(math.pi * angle))
            draw.line([(x, y), end], fill=color, width=line_width)
        else:
            draw.ellipse([x - dot_radius, y - dot_radius, x + dot_radius, y + dot_radius], fill=color)


def grain_cell(image_size: int) -> int:
    """Side of the square cells the grain is constant over: about 2% of the longer side (2 px at 96–128 px,
    4 px at 224), so a 224-px image resized to 96 px looks like one made at 96 px; and cells above 1 px
    PNG-compress 2–3× faster than per-pixel noise."""
    return max(2, round(image_size / 56))


def _add_grain(canvas: Image.Image, rng: np.random.Generator, amplitude: int) -> Image.Image:
    """Uniform grain in [-amplitude, amplitude] per channel and cell, added with clipping (in C)."""
    width, height = canvas.size
    cell = grain_cell(max(width, height))
    cells = rng.integers(
        0, 2 * amplitude + 1, size=(-(-height // cell), -(-width // cell), 3), dtype=np.uint8
    )
    grain = (
        Image.fromarray(cells, "RGB")
        .resize((cells.shape[1] * cell, cells.shape[0] * cell), Image.Resampling.NEAREST)
        .crop((0, 0, width, height))
    )
    return ImageChops.add(canvas, grain, scale=1.0, offset=-amplitude)


def render(
    planned: list[PlannedObject], width: int, height: int, config: SceneConfig, rng: np.random.Generator
) -> Rendered:
    canvas = _background(rng, width, height)
    draw = ImageDraw.Draw(canvas)
    _draw_clutter(draw, rng, width, height, config.clutter)
    instances = Image.new("L", (width, height), 0)
    mask_draw = ImageDraw.Draw(instances)
    outlines = [polygon(item) for item in planned]
    colors = _jittered(rng, [item.color for item in planned])
    for index, (item, outline, color) in enumerate(zip(planned, outlines, colors, strict=True), start=1):
        if item.shape == "circle":
            half = item.extent / 2
            ellipse = [item.cx - half, item.cy - half, item.cx + half, item.cy + half]
            draw.ellipse(ellipse, fill=color)
            mask_draw.ellipse(ellipse, fill=index)
        else:
            draw.polygon(outline, fill=color)
            mask_draw.polygon(outline, fill=index)
    if config.noise:
        canvas = _add_grain(canvas, rng, config.noise)
    instance_ids = np.asarray(instances)
    objects, areas, polygons = _read_back(planned, instance_ids, outlines)
    lookup = np.zeros(256, dtype=np.uint8)
    for index, item in enumerate(planned, start=1):
        lookup[index] = SHAPES.index(item.shape) + 1
    return Rendered(np.asarray(canvas), lookup[instance_ids], objects, areas, polygons)


def _read_back(
    planned: list[PlannedObject],
    instance_ids: np.ndarray,
    outlines: list[list[tuple[float, float]]],
) -> tuple[list[SceneObject], list[int], list[list[tuple[float, float]]]]:
    """Tight boxes and pixel areas of every drawn object, from the instance mask (one window per object)."""
    height, width = instance_ids.shape
    objects, areas, polygons = [], [], []
    for index, (item, outline) in enumerate(zip(planned, outlines, strict=True), start=1):
        xs, ys = [x for x, _ in outline], [y for _, y in outline]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        left, top = max(0, math.floor(x1) - 1), max(0, math.floor(y1) - 1)
        window = (
            instance_ids[top : min(height, math.ceil(y2) + 2), left : min(width, math.ceil(x2) + 2)] == index
        )
        rows, cols = np.any(window, axis=1), np.any(window, axis=0)
        if not rows.any():
            continue  # too small to cover a pixel centre; never happens at the supported sizes
        row_idx, col_idx = np.flatnonzero(rows), np.flatnonzero(cols)
        box = (
            left + int(col_idx[0]),
            top + int(row_idx[0]),
            left + int(col_idx[-1]) + 1,
            top + int(row_idx[-1]) + 1,
        )
        objects.append(SceneObject(len(objects), item.shape, item.color, item.size, item.rotation, box))
        areas.append(int(window.sum()))
        polygons.append(outline)
    return objects, areas, polygons


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W) uint8 array.

    A minimal encoder (one IDAT, the "Up" filter on every row, zlib level 1) instead of PIL's: PIL tries
    adaptive filters row by row and is 3–5× slower on these noisy images, which alone would miss the speed
    target. Any PNG reader decodes the result; the bytes depend only on the pixels and zlib.
    """
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above it
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    color_type = 0 if channels == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        )
    )
