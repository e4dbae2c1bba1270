"""ShapeScenes: a deterministic procedural grounded-VQA benchmark (scene graphs, VQA, referring expressions,
POPE probes, COCO instances, masks and a classification view), written in the layouts of the real datasets."""

from ssmvlm.data.shapes.generate import DEFAULT_SPLITS, generate_shapescenes, make_scene, parse_splits
from ssmvlm.data.shapes.scene import COLORS, SHAPES, SIZES, Scene, SceneConfig, SceneObject

__all__ = [
    "COLORS",
    "DEFAULT_SPLITS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "generate_shapescenes",
    "make_scene",
    "parse_splits",
]
