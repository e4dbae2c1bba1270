"""Metrics: the official VQA normalizer, leave-one-out scores, box parsing, IoU, aggregates, intervals."""

from __future__ import annotations

import math
import random

import pytest

from ssmvlm.eval.metrics import (
    accuracy_at_iou,
    binary_average_precision,
    binary_metrics,
    bootstrap_ci,
    box_iou,
    gqa_score,
    leave_one_out_accuracy,
    normalize_textvqa_answer,
    normalize_vizwiz_answer,
    normalize_vqa_answer,
    parse_box,
    textvqa_score,
    vizwiz_score,
    vqa_score,
    weighted_aggregates,
    yes_no_from_text,
)

NORMALIZER_TABLE = [
    ("Yes.", "yes"),
    ("3.5", "3.5"),
    ("a dog, cat", "dog cat"),
    ("1,000", "1000"),
    ("It's two!", "it's 2"),
    ("Dont know", "don't know"),
    ("the end.", "end"),
    ("x-ray", "x ray"),
    ("red/white", "red white"),
    ("U.S.A.", "usa"),
    ("  Two\tdogs\n", "2 dogs"),
    ("Im here", "im here"),  # capitalised contraction keys never match after lowercasing (official quirk)
    ("none", "0"),
    ("An apple", "apple"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZER_TABLE)
def test_normalizer_table(raw: str, expected: str) -> None:
    assert normalize_vqa_answer(raw) == expected


def test_leave_one_out_hand_computed() -> None:
    refs = ["2", "2"] + ["3"] * 8
    # each "2" ref sees 1 other match (1/3), each "3" ref sees 2 (2/3): (2/3 + 16/3) / 10
    assert leave_one_out_accuracy("2", refs) == pytest.approx(0.6)
    assert leave_one_out_accuracy("3", refs) == pytest.approx(1.0)
    # a single matching reference: that one sees 0 others, the other 9 see 1 -> 9 * (1/3) / 10
    assert leave_one_out_accuracy("x", ["x"] + ["y"] * 9) == pytest.approx(0.3)
    assert leave_one_out_accuracy("z", ["y"] * 10) == 0.0
    assert leave_one_out_accuracy("y", []) == 0.0


def test_vqa_score_normalizes_prediction_and_punctuation_only_references() -> None:
    refs = ["2", "2", "two", "2", "3", "2", "2", "2", "2", "3"]
    assert vqa_score("Two.", refs) == pytest.approx(1.0)  # "two" -> "2": 7 matches
    assert vqa_score("3", refs) == pytest.approx(0.6)
    # references get punctuation processing only: "Two" stays "Two" and never equals a normalized prediction
    assert vqa_score("two", ["Two"] * 10) == 0.0
    assert vqa_score("frisbee", ["frisbee"] * 7 + ["disc"] * 2 + ["frisbee!"]) == pytest.approx(1.0)
    assert vqa_score("disc", ["frisbee"] * 7 + ["disc"] * 2 + ["frisbee!"]) == pytest.approx(0.6)


def test_textvqa_and_vizwiz_and_gqa() -> None:
    answers = [
        "nous les gosses",
        "dakota",
        "clos culombu",
        "dakota digital",
        "dakota",
        "dakota",
        "dakota digital",
        "dakota digital",
        "dakota",
        "dakota",
    ]
    assert textvqa_score("Dakota", answers) == pytest.approx(1.0)
    assert textvqa_score("dakota digital", answers) == pytest.approx(0.9)
    assert normalize_textvqa_answer("It's STOP, 1,000?") == "it 's stop 1000"
    assert textvqa_score("STOP", ["STOP"] * 9 + ["stop sign"]) == pytest.approx(1.0)
    assert vizwiz_score("Unanswerable.", ["unanswerable"] * 10) == 1.0
    assert vizwiz_score("soup", ["soup"] * 6 + ["can of soup"] * 4) == pytest.approx(1.0)
    # VizWiz's copy of the contraction table uses backticks: "dont" never matches a reference "don't" there
    assert normalize_vizwiz_answer("Dont know") == "don`t know"
    assert vizwiz_score("dont know", ["don't know"] * 10) == 0.0
    assert vqa_score("dont know", ["don't know"] * 10) == 1.0
    assert gqa_score("Blue.", "blue") == 1.0
    assert gqa_score("light blue", "blue") == 0.0


def test_pope_text_answers_and_binary_metrics() -> None:
    assert yes_no_from_text("Yes, there is a dog.") == "yes"
    assert yes_no_from_text("No.") == "no"
    assert yes_no_from_text("There is not a dog in the image.") == "no"
    assert yes_no_from_text("I think so") == "yes"
    metrics = binary_metrics(["yes", "yes", "no", "no"], ["yes", "no", "no", "yes"])
    assert metrics == pytest.approx(
        {"accuracy": 50.0, "precision": 50.0, "recall": 50.0, "f1": 50.0, "yes_ratio": 50.0}
    )
    metrics = binary_metrics(["yes", "yes", "yes"], ["yes", "no", "yes"])
    assert metrics["precision"] == pytest.approx(200 / 3)
    assert metrics["recall"] == 100.0
    assert metrics["f1"] == pytest.approx(80.0)


def test_binary_average_precision_matches_the_two_step_curve() -> None:
    # thresholds 1 then 0: P@1 = 0.5, R@1 = 0.5; P@0 = 0.5, R@0 = 1 -> 0.5 * 0.5 + 0.5 * 0.5
    assert binary_average_precision([True, False, True, False], [True, True, False, False]) == pytest.approx(
        50.0
    )
    assert binary_average_precision(
        [True, False, False, False], [True, False, False, False]
    ) == pytest.approx(100.0)
    assert binary_average_precision([False] * 4, [True, False, False, False]) == pytest.approx(25.0)
    assert binary_average_precision([True] * 3, [False] * 3) == 0.0


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        ("[0.1, 0.2, 0.3, 0.4]", (0.1, 0.2, 0.3, 0.4), (0.1, 0.2, 0.3, 0.4)),
        ("  [0, 0, 1, 1]\n", (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0)),
        ("[1e-1, 0.2, 0.3, 0.4]", (0.1, 0.2, 0.3, 0.4), (0.1, 0.2, 0.3, 0.4)),
        ("The box is [0.1, 0.2, 0.3, 0.4].", None, (0.1, 0.2, 0.3, 0.4)),
        ("(0.1, 0.2, 0.3, 0.4)", None, (0.1, 0.2, 0.3, 0.4)),
        ("[0.1, 0.2, 0.3]", None, None),
        ("[0.1, 0.2, 0.3, 0.4, 0.5]", None, None),
        ("[0.3, 0.2, 0.1, 0.4]", None, None),  # x1 > x2
        ("[0.1, 0.4, 0.3, 0.4]", None, None),  # y1 == y2
        ("[-0.1, 0.2, 0.3, 0.4]", None, None),
        ("[True, 0.2, 0.3, 0.4]", None, None),
        ("[[0.1, 0.2, 0.3, 0.4]]", None, (0.1, 0.2, 0.3, 0.4)),
        ("['0.1', 0.2, 0.3, 0.4]", None, None),
        ("[nan, 0.2, 0.3, 0.4]", None, None),
        ("__import__('os').system('true')", None, None),
        ("[" * 5000, None, None),
        ("", None, None),
        ("[120, 200, 500, 800]", None, (0.12, 0.2, 0.5, 0.8)),  # 0–1000 grid
        ("[1200, 200, 1500, 800]", None, None),
        ("[0.5, 0.5, 0.1, 0.1] no, [0.1, 0.1, 0.5, 0.5]", None, (0.1, 0.1, 0.5, 0.5)),
    ],
)
def test_parse_box_adversarial(text: str, strict: tuple | None, lenient: tuple | None) -> None:
    assert parse_box(text) == (pytest.approx(strict) if strict else None)
    assert parse_box(text, lenient=True) == (pytest.approx(lenient) if lenient else None)


def test_parse_box_pixels_only_when_marked() -> None:
    assert parse_box("[10, 20, 30, 40] pixels", lenient=True, image_size=(100, 200)) == pytest.approx(
        (0.1, 0.1, 0.3, 0.2)
    )
    assert parse_box("[10, 20, 30, 40]", lenient=True, image_size=(100, 200)) == pytest.approx(
        (0.01, 0.02, 0.03, 0.04)
    )
    assert parse_box(None) is None  # type: ignore[arg-type]


def test_box_iou_edge_cases() -> None:
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching edges
    assert box_iou((0, 0, 1, 1), (0, 0, 0.5, 0.5)) == pytest.approx(0.25)
    assert box_iou((0, 0, 2, 1), (1, 0, 3, 1)) == pytest.approx(1 / 3)
    assert box_iou((0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)) == 0.0  # zero-area boxes
    assert box_iou((1, 1, 0, 0), (0, 0, 1, 1)) == 0.0  # inverted box has no area
    assert accuracy_at_iou([0.5, 0.49, None, 1.0]) == 50.0
    assert accuracy_at_iou([0.3, 0.2], threshold=0.25) == 50.0
    assert accuracy_at_iou([]) == 0.0


def test_weighted_aggregates_arithmetic() -> None:
    tasks = [
        {"group": "vqa", "n": 100, "score": 50.0},
        {"group": "vqa", "n": 300, "score": 70.0},
        {"group": "loc", "n": 100, "score": 20.0},
    ]
    out = weighted_aggregates(tasks)
    assert out["vqa"]["weighted"] == pytest.approx(65.0)
    assert out["vqa"]["macro"] == pytest.approx(60.0)
    assert out["loc"]["weighted"] == pytest.approx(20.0)
    assert out["overall"]["weighted"] == pytest.approx(56.0)
    assert out["overall"]["macro"] == pytest.approx(140 / 3)
    assert out["overall"]["n"] == 500
    assert "loc" not in weighted_aggregates(tasks[:2])


def test_bootstrap_ci() -> None:
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    scores = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_ci(scores, seed=3)
    assert low < 0.3 < high
    assert low > 0.15 and high < 0.45
    assert bootstrap_ci(scores, seed=3) == (low, high)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_fuzz_normalizer_and_box_parser_never_crash() -> None:
    rng = random.Random(0)
    alphabet = "0123456789.,-+eE[]()' \"\n\tabcxyzYesNo!?/;:_\\{}<>@`=*#$%&\u00e9\u4e2d\ud83d"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert isinstance(normalize_vqa_answer(text), str)
        assert isinstance(normalize_textvqa_answer(text), str)
        assert 0.0 <= vqa_score(text, [text, "yes"]) <= 1.0
        for lenient in (False, True):
            box = parse_box(text, lenient=lenient, image_size=(rng.randint(1, 9), rng.randint(1, 9)))
            if box is not None:
                assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in box)
                assert box[0] < box[2] and box[1] < box[3]
