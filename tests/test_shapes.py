"""ShapeScenes: determinism, disjoint splits, file formats, answers re-derived independently of the generator.

The re-derivation below parses every question and referring expression with its own grammar and evaluates it
on the scene graph with its own definitions of the relations (boxes for left/right/above/below, centres with a
margin for ordinals and "closest"), so a bug in the generator's answer code cannot hide behind itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ssmvlm.cli import app
from ssmvlm.data.llava import GROUNDING_PROMPT, VQA_PROMPT, load_llava_records
from ssmvlm.data.shapes import COLORS, SHAPES, SIZES, SceneConfig, generate_shapescenes
from ssmvlm.data.shapes.scene import LANGUAGE_KNOBS
from ssmvlm.data.transforms import RESIZE_STRATEGIES, build_image_transform
from ssmvlm.utils.errors import ConfigError

SPLITS = ("train", "val", "test")
ARGS: dict[str, Any] = {"size": 60, "image_size": 80, "seed": 11, "show_progress": False}


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file except run.json (which records when it ran)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "run.json"
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate_shapescenes(out, **ARGS)
    return out


def _json(root: Path, split: str, name: str) -> Any:
    return json.loads((root / split / name).read_text())


def _scenes(root: Path, split: str) -> list[dict[str, Any]]:
    return _json(root, split, "scenes.json")


# --- determinism and splits ---


def test_same_seed_gives_identical_files_for_any_worker_count(root: Path, tmp_path: Path) -> None:
    reference = _digest(root)
    assert len(reference) > 2 * ARGS["size"]  # images, masks and every annotation file
    generate_shapescenes(tmp_path / "two", workers=2, **ARGS)
    assert _digest(tmp_path / "two") == reference
    generate_shapescenes(tmp_path / "two", workers=1, **ARGS)  # re-run into the same folder
    assert _digest(tmp_path / "two") == reference
    assert not list((tmp_path / "two").rglob("*.tmp"))
    generate_shapescenes(tmp_path / "other", **{**ARGS, "seed": 12})
    assert _digest(tmp_path / "other")["train/scenes.json"] != reference["train/scenes.json"]


def test_other_namespaces_are_deterministic_and_disjoint_from_the_benchmark(root: Path, tmp_path: Path) -> None:
    generate_shapescenes(tmp_path / "a", namespace="pretrain", **ARGS)
    generate_shapescenes(tmp_path / "b", namespace="pretrain", workers=2, **ARGS)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["namespace"] == "pretrain"

    def pixels(folder: Path) -> set[str]:
        return {hashlib.sha256(np.asarray(Image.open(p)).tobytes()).hexdigest() for p in folder.rglob("images/*/*.png")}

    benchmark, pretraining = pixels(root), pixels(tmp_path / "a")
    assert len(benchmark) == len(pretraining) == ARGS["size"]
    assert not benchmark & pretraining  # same seed, same sizes: still no scene in common
    generate_shapescenes(tmp_path / "mix", namespace="mix", **ARGS)  # a study's training mix
    assert len(mix := pixels(tmp_path / "mix")) == ARGS["size"] and not mix & (benchmark | pretraining)
    with pytest.raises(ConfigError, match="namespace"):
        generate_shapescenes(tmp_path / "c", namespace="nope", **ARGS)


def test_existence_turns_add_each_scene_pope_pair_to_the_conversations_only(root: Path, tmp_path: Path) -> None:
    generate_shapescenes(tmp_path, existence_turns=True, **ARGS)
    with_turns, without = _digest(tmp_path), _digest(root)
    changed = {name for name in without if with_turns.get(name) != without[name]}
    assert changed == {f"{split}/llava.json" for split in SPLITS} | {"manifest.json"}  # the rest byte-identical
    for split in SPLITS:
        pairs = {}
        for line in (root / split / "pope_adversarial.jsonl").read_text().splitlines():
            probe = json.loads(line)
            pairs.setdefault(probe["image"], []).append((probe["text"], probe["label"].capitalize()))
        plain = {r["image"]: r["conversations"] for r in _json(root, split, "llava.json")}
        for record in _json(tmp_path, split, "llava.json"):
            turns = record["conversations"]
            added = len(turns) - len(plain[record["image"]])
            assert added == 4  # a yes and a no turn, each a question and its answer
            asked = [(t["value"].split("\n")[0], a["value"]) for t, a in zip(turns[::2], turns[1::2], strict=True)]
            assert set(pairs[record["image"]]) <= set(asked)


def test_language_knobs_leave_every_image_mask_and_label_unchanged(root: Path, tmp_path: Path) -> None:
    # Why pretraining scenes may ignore LANGUAGE_KNOBS (study/matrix.py): only the text files may differ.
    generate_shapescenes(tmp_path, vqa_per_image=5, refs_per_image=1, existence_turns=True, **ARGS)
    reworded, plain = _digest(tmp_path), _digest(root)
    assert set(reworded) == set(plain) and set(LANGUAGE_KNOBS) <= set(SceneConfig.__dataclass_fields__)
    labels = ("classification.json", "instances.json")
    pixels_and_labels = [name for name in plain if name.endswith(".png") or Path(name).name in labels]
    assert len(pixels_and_labels) > 2 * ARGS["size"]
    assert all(reworded[name] == plain[name] for name in pixels_and_labels)
    assert reworded["train/llava.json"] != plain["train/llava.json"]


def test_smaller_rerun_removes_stale_images(tmp_path: Path) -> None:
    generate_shapescenes(tmp_path, size=20, image_size=48, seed=1, show_progress=False)
    generate_shapescenes(tmp_path, size=10, image_size=48, seed=1, show_progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for split in SPLITS:
        expected = manifest["splits"][split]["scenes"]
        assert len(list((tmp_path / "images" / split).glob("*.png"))) == expected
        assert len(list((tmp_path / "masks" / split).glob("*.png"))) == expected


def test_splits_share_no_scene_and_no_image(root: Path) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    counts = {split: manifest["splits"][split]["scenes"] for split in SPLITS}
    assert counts == {"train": 48, "val": 6, "test": 6}
    ids: dict[str, set[int]] = {}
    pixels: dict[str, set[str]] = {}
    for split in SPLITS:
        scenes = _scenes(root, split)
        assert len(scenes) == counts[split]
        assert all(s["file_name"].startswith(f"images/{split}/") for s in scenes)
        ids[split] = {s["image_id"] for s in scenes}
        pixels[split] = {
            hashlib.sha256(np.asarray(Image.open(root / s["file_name"])).tobytes()).hexdigest()
            for s in scenes
        }
        assert len(ids[split]) == len(pixels[split]) == counts[split]
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not ids[a] & ids[b] and not pixels[a] & pixels[b]


def test_scene_properties(root: Path) -> None:
    scenes = [s for split in SPLITS for s in _scenes(root, split)]
    counts = [len(s["objects"]) for s in scenes]
    assert min(counts) >= 1 and max(counts) <= 8 and len(set(counts)) >= 5
    aspects = Counter(s["width"] / s["height"] for s in scenes)
    non_square = sum(n for ratio, n in aspects.items() if ratio != 1)
    assert 0.2 < non_square / len(scenes) < 0.6 and len(aspects) == 4
    assert all(max(s["width"], s["height"]) == ARGS["image_size"] for s in scenes)
    for scene in scenes:
        short = min(scene["width"], scene["height"])
        for obj in scene["objects"]:
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= scene["width"] and 0 <= y1 < y2 <= scene["height"]
            assert max(x2 - x1, y2 - y1) >= 0.1 * short  # even small objects stay visible
            assert obj["shape"] in SHAPES and obj["color"] in COLORS and obj["size"] in SIZES
        boxes = [o["box"] for o in scene["objects"]]
        for i, a in enumerate(boxes):  # objects never overlap, so masks and boxes are exact
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_masks_and_images_match_the_scene_graph(root: Path) -> None:
    instances = _json(root, "val", "instances.json")
    areas = {a["id"]: a["area"] for a in instances["annotations"]}
    for scene in _scenes(root, "val"):
        image = Image.open(root / scene["file_name"])
        mask = np.asarray(Image.open(root / scene["file_name"].replace("images/", "masks/")))
        assert image.mode == "RGB" and image.size == (scene["width"], scene["height"])
        assert mask.dtype == np.uint8 and mask.shape == (scene["height"], scene["width"])
        for obj in scene["objects"]:
            x1, y1, x2, y2 = obj["box"]
            window = mask[y1:y2, x1:x2]
            label = SHAPES.index(obj["shape"]) + 1
            assert set(np.unique(window)) <= {0, label}
            inside = window == label
            # The box is tight: the object touches all four of its sides.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert inside.sum() == areas[scene["image_id"] * 100 + obj["id"] + 1]
        assert (mask > 0).sum() == sum(areas[scene["image_id"] * 100 + o["id"] + 1] for o in scene["objects"])


# --- an independent reading of the language ---

SIZE_ORDER = {"small": 0, "medium": 1, "large": 2}
PHRASE = r"the (?:(small|medium|large) )?(?:(" + "|".join(COLORS) + r") )?(" + "|".join(SHAPES) + r"|object)"
PLURAL = {f"{shape}s" if not shape.endswith("s") else f"{shape}es": shape for shape in SHAPES}
PLURAL["objects"] = "object"


def _select(objects: list[dict], size: str | None, color: str | None, shape: str) -> list[dict]:
    return [
        o
        for o in objects
        if (size is None or o["size"] == size)
        and (color is None or o["color"] == color)
        and (shape == "object" or o["shape"] == shape)
    ]


def _one(objects: list[dict], phrase: str) -> dict:
    match = re.fullmatch(PHRASE, phrase)
    assert match, f"not a phrase: {phrase!r}"
    found = _select(objects, *match.groups())
    assert len(found) == 1, f"{phrase!r} matches {len(found)} objects"
    return found[0]


def _centre(obj: dict) -> tuple[float, float]:
    x1, y1, x2, y2 = obj["box"]
    return (x1 + x2) / 2, (y1 + y2) / 2


def _holds(relation: str, a: dict, b: dict) -> bool:
    ax1, ay1, ax2, ay2 = a["box"]
    bx1, by1, bx2, by2 = b["box"]
    return {
        "to the left of": ax2 <= bx1,
        "to the right of": ax1 >= bx2,
        "above": ay2 <= by1,
        "below": ay1 >= by2,
    }[relation]


def _clearly_closest(anchor: dict, candidates: list[dict]) -> dict:
    others = sorted(
        (o for o in candidates if o is not anchor), key=lambda o: math.dist(_centre(o), _centre(anchor))
    )
    if len(others) > 1:
        first, second = (math.dist(_centre(o), _centre(anchor)) for o in others[:2])
        assert second >= 1.3 * first, "'closest' is not clear"
    return others[0]


def derive_answer(question: str, objects: list[dict]) -> str:
    """The answer to one ShapeScenes question, from the scene graph alone."""
    if m := re.fullmatch(rf"What (color|shape) is the object closest to ({PHRASE})\?", question):
        return _clearly_closest(_one(objects, m.group(2)), objects)[m.group(1)]
    if m := re.fullmatch(rf"What color is ({PHRASE})\?", question):
        assert m.group(3) is None, "a colour question must not name the colour"
        return _one(objects, m.group(1))["color"]
    if m := re.fullmatch(rf"What shape is ({PHRASE})\?", question):
        assert m.group(4) == "object", "a shape question must not name the shape"
        return _one(objects, m.group(1))["shape"]
    if m := re.fullmatch(r"How many (?:(\w+) )?(\w+) are there\?", question):
        return str(len(_select(objects, None, m.group(1), PLURAL[m.group(2)])))
    if m := re.fullmatch(r"Is there (a|an) (\w+) (\w+) in the image\?", question):
        assert m.group(1) == ("an" if m.group(2)[0] in "aeiou" else "a")
        return "yes" if _select(objects, None, m.group(2), m.group(3)) else "no"
    if m := re.fullmatch(
        rf"Is ({PHRASE}) (to the left of|to the right of|above|below) ({PHRASE})\?", question
    ):
        a, relation, b = _one(objects, m.group(1)), m.group(5), _one(objects, m.group(6))
        opposite = {
            "to the left of": "to the right of",
            "to the right of": "to the left of",
            "above": "below",
            "below": "above",
        }[relation]
        assert _holds(relation, a, b) or _holds(opposite, a, b), (
            "asked about a pair not separated on that axis"
        )
        return "yes" if _holds(relation, a, b) else "no"
    if m := re.fullmatch(rf"Is ({PHRASE}) (bigger|smaller) than ({PHRASE})\?", question):
        a, word, b = _one(objects, m.group(1)), m.group(5), _one(objects, m.group(6))
        assert m.group(2) is None and m.group(7) is None, "a size comparison must not name the sizes"
        assert a["size"] != b["size"]
        bigger = SIZE_ORDER[a["size"]] > SIZE_ORDER[b["size"]]
        return "yes" if bigger == (word == "bigger") else "no"
    raise AssertionError(f"unparsed question {question!r}")


def resolve_expression(sentence: str, objects: list[dict], short_side: int) -> dict:
    """The single object a referring expression denotes (fails if it denotes none or several)."""
    if m := re.fullmatch(r"the (leftmost|rightmost|topmost|bottommost) (.+)", sentence):
        candidates = _select(objects, *re.fullmatch(PHRASE, "the " + m.group(2)).groups())
        axis, sign = {"leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)}[
            m.group(1)
        ]
        ranked = sorted(candidates, key=lambda o: sign * _centre(o)[axis])
        assert len(ranked) >= 2, "an ordinal needs at least two candidates"
        gap = sign * (_centre(ranked[1])[axis] - _centre(ranked[0])[axis])
        assert gap >= max(2.0, 0.05 * short_side), f"{sentence!r}: the extreme is not clear ({gap:.1f} px)"
        return ranked[0]
    if m := re.fullmatch(
        rf"({PHRASE}) (to the left of|to the right of|above|below|closest to) ({PHRASE})", sentence
    ):
        anchor = _one(objects, m.group(6))
        candidates = [o for o in _select(objects, *m.group(2, 3, 4)) if o is not anchor]
        if m.group(5) == "closest to":
            return _clearly_closest(anchor, candidates)
        found = [o for o in candidates if _holds(m.group(5), o, anchor)]
        assert len(found) == 1, f"{sentence!r} matches {len(found)} objects"
        return found[0]
    return _one(objects, sentence)


def test_every_answer_rederived_from_the_scene_graph(root: Path) -> None:
    families: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    for split in SPLITS:
        scenes = {s["image_id"]: s for s in _scenes(root, split)}
        questions = _json(root, split, "vqa_questions.json")["questions"]
        annotations = {a["question_id"]: a for a in _json(root, split, "vqa_annotations.json")["annotations"]}
        assert len(questions) == len(annotations) >= 2 * len(scenes)
        for question in questions:
            annotation = annotations[question["question_id"]]
            objects = scenes[question["image_id"]]["objects"]
            expected = derive_answer(question["question"], objects)
            assert annotation["multiple_choice_answer"] == expected, question["question"]
            families[annotation["question_type"]] += 1
            answers[annotation["answer_type"], expected] += 1
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(families) == set(manifest["vocabulary"]["question_types"])
    assert min(families.values()) >= 10  # every family is well represented
    yes, no = answers["yes/no", "yes"], answers["yes/no", "no"]
    assert 0.3 < yes / (yes + no) < 0.7


def test_every_referring_expression_matches_exactly_its_target(root: Path) -> None:
    styles: Counter[str] = Counter()
    for split in SPLITS:
        scenes = {s["image_id"]: s for s in _scenes(root, split)}
        refs = _json(root, split, "refs.json")
        assert len(refs) >= len(scenes)
        for ref in refs:
            scene = scenes[ref["image_id"]]
            target = resolve_expression(
                ref["sentences"][0]["sent"], scene["objects"], min(scene["width"], scene["height"])
            )
            assert ref["ann_id"] == ref["image_id"] * 100 + target["id"] + 1
            assert ref["category_id"] == SHAPES.index(target["shape"]) + 1
            styles[ref["style"]] += 1
    assert set(styles) == {"attributes", "relation", "ordinal"} and min(styles.values()) >= 10


def test_pope_labels_and_balance(root: Path) -> None:
    scenes = {s["file_name"]: s for s in _scenes(root, "val")}
    for variant in ("adversarial", "popular", "random"):
        lines = [
            json.loads(line) for line in (root / "val" / f"pope_{variant}.jsonl").read_text().splitlines()
        ]
        assert len(lines) == 2 * len(scenes) and len({line["question_id"] for line in lines}) == len(lines)
        assert Counter(line["label"] for line in lines) == {"yes": len(scenes), "no": len(scenes)}
        for line in lines:
            assert set(line) == {"question_id", "image", "text", "label"}
            assert line["label"] == derive_answer(line["text"], scenes[line["image"]]["objects"])
            if variant == "adversarial" and line["label"] == "no":
                color, shape = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", line["text"]).groups()
                objects = scenes[line["image"]]["objects"]
                distinct_pairs = {(o["color"], o["shape"]) for o in objects}
                colors, shapes = {o["color"] for o in objects}, {o["shape"] for o in objects}
                if any(c != o_c and s != o_s for c, s in distinct_pairs for o_c, o_s in distinct_pairs):
                    assert color in colors and shape in shapes  # a binding error, when the scene allows one


# --- file formats ---


def test_vqav2_layout(root: Path) -> None:
    questions = _json(root, "val", "vqa_questions.json")
    annotations = _json(root, "val", "vqa_annotations.json")
    assert {"info", "task_type", "data_type", "data_subtype", "license", "questions"} <= set(questions)
    assert {"info", "data_type", "data_subtype", "license", "annotations"} <= set(annotations)
    assert set(questions["questions"][0]) == {"image_id", "question", "question_id"}
    for annotation in annotations["annotations"]:
        assert {
            "question_id",
            "image_id",
            "question_type",
            "answer_type",
            "multiple_choice_answer",
            "answers",
        } <= set(annotation)
        assert annotation["answer_type"] in ("yes/no", "number", "other")
        assert len(annotation["answers"]) == 10
        assert [a["answer_id"] for a in annotation["answers"]] == list(range(1, 11))
        assert {a["answer"] for a in annotation["answers"]} == {annotation["multiple_choice_answer"]}
        assert len(annotation["multiple_choice_answer"].split()) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside pycocotools under numpy 2
def test_coco_instances_load_with_pycocotools(root: Path) -> None:
    from pycocotools.coco import COCO

    coco = COCO(str(root / "val" / "instances.json"))
    scenes = _scenes(root, "val")
    assert sorted(coco.getImgIds()) == sorted(s["image_id"] for s in scenes)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
    for scene in scenes:
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=scene["image_id"]))
        assert len(annotations) == len(scene["objects"])
        for annotation in annotations:
            obj = scene["objects"][annotation["id"] - scene["image_id"] * 100 - 1]
            x, y, w, h = annotation["bbox"]
            assert [x, y, x + w, y + h] == obj["box"]
            polygon_mask = coco.annToMask(annotation)
            assert polygon_mask.shape == (scene["height"], scene["width"])
            # The segmentation polygon covers about the drawn pixels (rasterizers differ at the edges).
            assert abs(int(polygon_mask.sum()) - annotation["area"]) <= 0.35 * annotation["area"] + 8


def test_refer_and_classification_layouts(root: Path) -> None:
    instances = _json(root, "val", "instances.json")
    annotation_ids = {a["id"] for a in instances["annotations"]}
    refs = _json(root, "val", "refs.json")
    for ref in refs:
        assert {"ref_id", "ann_id", "image_id", "split", "category_id", "sentences"} <= set(ref)
        assert ref["split"] == "val" and ref["ann_id"] in annotation_ids
        sentence = ref["sentences"][0]
        assert (
            set(sentence) == {"sent_id", "sent", "raw", "tokens"}
            and sentence["tokens"] == sentence["sent"].split()
        )
    classification = _json(root, "val", "classification.json")
    assert len(classification["classes"]) == len(SHAPES) * len(COLORS)
    scenes = {s["file_name"]: s for s in _scenes(root, "val")}
    labelled = {sample["image"] for sample in classification["samples"]}
    for file_name, scene in scenes.items():
        sizes = sorted((SIZE_ORDER[o["size"]] for o in scene["objects"]), reverse=True)
        # A scene is a classification sample exactly when one object is of a larger size class than the rest.
        assert (file_name in labelled) == (len(sizes) == 1 or sizes[0] > sizes[1])
    assert labelled, "no scene of the fixture has a salient object"
    attributes = classification["attributes"]
    assert attributes == {"color": list(COLORS), "shape": list(SHAPES)}
    for sample in classification["samples"]:
        objects = scenes[sample["image"]]["objects"]
        largest = max(objects, key=lambda o: SIZE_ORDER[o["size"]])
        assert classification["classes"][sample["label"]] == f"{largest['color']} {largest['shape']}"
        assert (attributes["color"][sample["color"]], attributes["shape"][sample["shape"]]) == (
            largest["color"],
            largest["shape"],
        )
        assert {classification["classes"][k] for k in sample["present"]} == {
            f"{o['color']} {o['shape']}" for o in objects
        }


def test_llava_conversations_load_and_ground_correctly(root: Path) -> None:
    for split in SPLITS:
        scenes = {s["file_name"]: s for s in _scenes(root, split)}
        refs = {}
        for ref in _json(root, split, "refs.json"):
            refs.setdefault(ref["file_name"], []).append(ref)
        records = load_llava_records(root / split / "llava.json")  # image root found from manifest.json
        assert len(records) == len(scenes)
        for record in records:
            relative = str(record.image.relative_to(root))
            scene = scenes[relative]
            expected_boxes = []
            for ref in refs.get(relative, []):
                x1, y1, x2, y2 = scene["objects"][ref["ann_id"] % 100 - 1]["box"]
                w, h = scene["width"], scene["height"]
                expected_boxes.append(f"[{x1 / w:.2f}, {y1 / h:.2f}, {x2 / w:.2f}, {y2 / h:.2f}]")
            grounding = [
                (q, a)
                for q, a in zip(record.turns[::2], record.turns[1::2], strict=True)
                if q[1].startswith("Please provide the bounding box")
            ]
            assert [a[1] for _, a in grounding] == expected_boxes
            assert [q[1] for q, _ in grounding] == [
                GROUNDING_PROMPT.format(sentence=r["sentences"][0]["sent"]) for r in refs.get(relative, [])
            ]
            for (_, question), (_, answer) in zip(record.turns[::2], record.turns[1::2], strict=True):
                if question.endswith(VQA_PROMPT.format(question="")):
                    plain = question.removesuffix(VQA_PROMPT.format(question=""))
                    assert answer == derive_answer(plain, scene["objects"]).capitalize()


# --- boxes through the resize strategies ---


@pytest.mark.parametrize("strategy", RESIZE_STRATEGIES)
def test_boxes_round_trip_through_every_resize_strategy(root: Path, strategy: str) -> None:
    transform = build_image_transform(strategy, 96, mean=(0.0, 0.0, 0.0))
    for scene in _scenes(root, "val") + _scenes(root, "test"):
        width, height = scene["width"], scene["height"]
        for obj in scene["objects"]:
            box = tuple(float(v) for v in obj["box"])
            model_box = transform.box_to_model(box, width, height)
            assert np.allclose(transform.box_from_model(model_box, width, height), box, atol=1e-6)
            # Where the object's box lands in the transformed image is where the mapped box says (< 1 px).
            raster = np.zeros((height, width, 3), dtype=np.uint8)
            raster[obj["box"][1] : obj["box"][3], obj["box"][0] : obj["box"][2]] = 255
            out = np.asarray(transform.apply_pil(Image.fromarray(raster)))[..., 0] > 127
            clipped = np.clip(model_box, 0, 96)
            if clipped[2] - clipped[0] < 2 or clipped[3] - clipped[1] < 2:
                continue  # cut out (almost) entirely by a centre crop
            ys, xs = np.nonzero(out)
            measured = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert np.abs(np.array(measured) - clipped).max() < 1.0, (strategy, obj, measured, clipped)


def test_centre_crop_cuts_objects_out(root: Path) -> None:
    crop = build_image_transform("resize-crop", 96)
    partly, wholly = 0, 0
    for split in SPLITS:
        for scene in _scenes(root, split):
            for obj in scene["objects"]:
                x1, y1, x2, y2 = crop.box_to_model(tuple(obj["box"]), scene["width"], scene["height"])
                partly += x1 < 0 or y1 < 0 or x2 > 96 or y2 > 96
                wholly += x2 <= 0 or y2 <= 0 or x1 >= 96 or y1 >= 96
    assert partly >= 10 and wholly >= 1


# --- the command line and bad options ---


def test_cli_make_show_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        [
            "data",
            "make-shapes",
            "--out",
            str(out),
            "--size",
            "12",
            "--image-size",
            "64",
            "--seed",
            "5",
            "--splits",
            "train=0.5,val=0.5",
            "--difficulty",
            "hard",
            "--max-objects",
            "3",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["val"]["scenes"] == 6
    # The "hard" preset, with one knob overridden on the command line.
    assert manifest["config"]["clutter"] == "high" and manifest["config"]["max_objects"] == 3
    assert json.loads((out / "run.json").read_text())["seed"] == 5
    counts = [len(s["objects"]) for s in _scenes(out, "train")]
    assert max(counts) == 3 and min(counts) >= 2  # min_objects 3 from "hard"; a crowded canvas may drop one
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "show", str(out), "--split", "val", "--n", "4", "--out", str(grid)])
    assert result.exit_code == 0, result.output
    with Image.open(io.BytesIO(grid.read_bytes())) as image:
        assert image.size[0] > 4 * 200
    assert runner.invoke(app, ["data", "validate", str(out)]).exit_code == 0


@pytest.mark.parametrize(
    "options",
    [
        {"splits": {"train": 0.5, "dev": 0.5}},
        {"splits": {"train": 0.5, "val": 0.6}},
        {"clutter": "extreme"},
        {"max_objects": 9},
    {"difficulty": "brutal"},
        {"image_size": 16},
    ],
)
def test_bad_options_raise_config_errors(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        generate_shapescenes(
            tmp_path, **{"size": 4, "image_size": 48, "seed": 0, "show_progress": False, **options}
        )
    assert not (tmp_path / "manifest.json").exists()


def test_scene_config_defaults_are_the_documented_difficulty() -> None:
    config = SceneConfig()
    assert (config.min_objects, config.max_objects, config.clutter) == (1, 8, "medium")
