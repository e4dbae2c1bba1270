"""Answer normalization, per-example scores, box parsing/IoU, aggregates and bootstrap intervals.

The VQA normalizer follows the official VQA evaluation (GT-Vision-Lab/VQA ``vqaEval.py``) as
TRI-ML/vlm-evaluation applies it: the prediction gets punctuation *and* digit/article/contraction processing,
the reference answers get punctuation processing only, and the score is the leave-one-out soft accuracy
``mean_i min(1, #{j != i: ref_j == pred} / 3)``. Two quirks of the official script are kept on purpose because
they change scores: the period regex (whose intended look-behind is malformed, so it deletes any ``.`` not
followed by a digit) is applied at most 32 times (``re.UNICODE`` was passed as the *count*), and the
capitalised contraction keys ("Im", "Ive", ...) never match after lowercasing.
"""

from __future__ import annotations

import ast
import math
import re
import string
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
# The VizWiz evaluation copies the official table with its curly apostrophes turned into backticks, so a
# prediction "dont" becomes "don`t" there; the entries that were plain ASCII upstream stay as they are.
_VIZWIZ_ASCII_KEYS = frozenset({"couldn'tve", "hadn'tve"})
_VIZWIZ_ASCII_VALUES = frozenset({"aint", "arent", "cant", "couldve", "couldnt", "weve", "wheres", "whove"})
VIZWIZ_CONTRACTIONS: dict[str, str] = {
    (key if key in _VIZWIZ_ASCII_KEYS else key.replace("'", "`")): (
        value if key in _VIZWIZ_ASCII_VALUES else value.replace("'", "`")
    )
    for key, value in CONTRACTIONS.items()
}
NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)

_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_STRIP_COUNT = 32  # the official script passes re.UNICODE (== 32) as the count argument
_VQA_COMMA = re.compile(r"(\d)(,)(\d)")
_TEXTVQA_COMMA = re.compile(r"(?<=\d)(,)+(?=\d)")


def _process_punctuation(text: str, comma_pattern: re.Pattern[str]) -> str:
    # Whether a mark is deleted or turned into a space is decided on the *original* text, as upstream does.
    has_number_comma = comma_pattern.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or has_number_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_punctuation(text: str) -> str:
    """The official VQA punctuation step (applied alone to reference answers)."""
    return _process_punctuation(text, _VQA_COMMA)


def process_digits_articles(text: str, contractions: dict[str, str] = CONTRACTIONS) -> str:
    """Lowercase, number words to digits, drop articles, restore contractions, single spaces."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(contractions.get(word, word) for word in words if word not in ARTICLES)


def _strip_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """The full official normalization of a predicted answer ("It's two!" -> "it's 2")."""
    return process_digits_articles(process_punctuation(_strip_whitespace(str(text))))


def normalize_vqa_reference(text: str) -> str:
    """Reference answers get the punctuation step only, always and without stripping (as vlm-evaluation)."""
    return process_punctuation(str(text))


def leave_one_out_accuracy(prediction: str, references: Sequence[str]) -> float:
    """``mean_i min(1, #{j != i: ref_j == prediction} / 3)`` over the reference answers."""
    if not references:
        return 0.0
    matches = sum(ref == prediction for ref in references)
    total = 0.0
    for ref in references:
        others = matches - (ref == prediction)
        total += min(1.0, others / 3.0)
    return total / len(references)


def vqa_score(prediction: str, reference_answers: Sequence[str]) -> float:
    """VQAv2 soft accuracy in [0, 1]: normalized prediction vs punctuation-normalized references."""
    refs = [normalize_vqa_reference(ref) for ref in reference_answers]
    return leave_one_out_accuracy(normalize_vqa_answer(prediction), refs)


def normalize_vizwiz_answer(text: str) -> str:
    """The VizWiz evaluation's normalizer: the VQA one with its backtick contraction table."""
    return process_digits_articles(process_punctuation(_strip_whitespace(str(text))), VIZWIZ_CONTRACTIONS)


def vizwiz_score(prediction: str, reference_answers: Sequence[str]) -> float:
    """VizWiz soft accuracy: the prediction is normalized, the references are used as given."""
    return leave_one_out_accuracy(
        normalize_vizwiz_answer(prediction), [str(ref) for ref in reference_answers]
    )


def normalize_textvqa_answer(text: str) -> str:
    """The EvalAI/MMF TextVQA processor, applied to predictions and references alike."""
    text = str(text).lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = _process_punctuation(_strip_whitespace(text), _TEXTVQA_COMMA)
    return process_digits_articles(text)


def textvqa_score(prediction: str, reference_answers: Sequence[str]) -> float:
    """TextVQA soft accuracy in [0, 1] (MMF ``TextVQAAccuracyEvaluator``)."""
    refs = [normalize_textvqa_answer(ref) for ref in reference_answers]
    return leave_one_out_accuracy(normalize_textvqa_answer(prediction), refs)


_GQA_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_gqa_answer(text: str) -> str:
    return _strip_whitespace(str(text)).translate(_GQA_PUNCTUATION).lower().strip()


def gqa_score(prediction: str, answer: str) -> float:
    """GQA exact match after removing punctuation and lowercasing."""
    return float(normalize_gqa_answer(prediction) == normalize_gqa_answer(answer))


def is_unanswerable(prediction: str) -> bool:
    return normalize_vizwiz_answer(prediction) == "unanswerable"


def binary_average_precision(predicted: Sequence[bool], labels: Sequence[bool]) -> float:
    """Average precision (0–100) of hard 0/1 predictions, as sklearn's ``average_precision_score`` gives it.

    Two thresholds (1, then 0) make two steps: ``recall@1 * precision@1 + (1 - recall@1) * prevalence``.
    """
    positives = sum(labels)
    if positives == 0 or not labels:
        return 0.0
    flagged = sum(predicted)
    true_flagged = sum(p and y for p, y in zip(predicted, labels, strict=True))
    prevalence = positives / len(labels)
    if flagged == 0:
        return 100.0 * prevalence
    recall = true_flagged / positives
    return 100.0 * (recall * true_flagged / flagged + (1.0 - recall) * prevalence)


def yes_no_from_text(text: str) -> str:
    """A generated POPE answer as "yes"/"no".

    Follows LLaVA's POPE evaluation: an answer whose first word is yes/no is taken as is; otherwise any
    negation ("no", "not") in the first sentence means "no", everything else "yes".
    """
    words = normalize_vqa_answer(str(text).split(".")[0]).split()
    if words and words[0] in ("yes", "no"):
        return words[0]
    return "no" if {"no", "not"} & set(words) else "yes"


def binary_metrics(
    predictions: Sequence[str], labels: Sequence[str], positive: str = "yes"
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio (POPE) on a 0–100 scale."""
    n = len(labels)
    if n == 0:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}
    tp = sum(p == positive and y == positive for p, y in zip(predictions, labels, strict=True))
    fp = sum(p == positive and y != positive for p, y in zip(predictions, labels, strict=True))
    fn = sum(p != positive and y == positive for p, y in zip(predictions, labels, strict=True))
    correct = sum(p == y for p, y in zip(predictions, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100.0 * correct / n,
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "f1": 100.0 * f1,
        "yes_ratio": 100.0 * sum(p == positive for p in predictions) / n,
    }


# --- boxes -------------------------------------------------------------------------------------------

Box = tuple[float, float, float, float]
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_LIST = re.compile(rf"[\[(]\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*[\])]")
_PIXEL_MARK = re.compile(r"\b(?:px|pixels?)\b", re.IGNORECASE)
_MAX_STRICT_CHARS = 200  # a 4-number list is short; longer outputs are not literal-evaluated at all


def _valid_unit_box(values: Sequence[float]) -> Box | None:
    if len(values) != 4 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        return None
    x1, y1, x2, y2 = (float(v) for v in values)
    return (x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


def parse_box(text: str, *, lenient: bool = False, image_size: tuple[int, int] | None = None) -> Box | None:
    """A normalized ``(x1, y1, x2, y2)`` box from a model's output, or None.

    Strict (vlm-evaluation): the whole output, literal-evaluated, must be a list of exactly 4 numbers in
    [0, 1] with x1 < x2 and y1 < y2. Lenient: the first 4-number list anywhere in the text that becomes such
    a box, where numbers above 1 are read as pixels when the text says so ("px"/"pixels") and ``image_size``
    = (width, height) is known, else as a 0–1000 grid.
    """
    if not isinstance(text, str):
        return None
    if not lenient:
        stripped = text.strip()
        if len(stripped) > _MAX_STRICT_CHARS:
            return None
        try:
            with warnings.catch_warnings():  # odd escapes in model output must not spam warnings
                warnings.simplefilter("ignore")
                value = ast.literal_eval(stripped)
        except Exception:  # literal_eval raises many types (SyntaxError, ValueError, MemoryError, ...)
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return None
        return _valid_unit_box(value)
    pixels = image_size is not None and _PIXEL_MARK.search(text) is not None
    for match in _BOX_LIST.finditer(text):
        values = [float(group) for group in match.groups()]
        if max(values) > 1.0:
            if pixels:
                width, height = image_size  # type: ignore[misc]
                values = [values[0] / width, values[1] / height, values[2] / width, values[3] / height]
            else:
                values = [v / 1000.0 for v in values]
        box = _valid_unit_box(values)
        if box is not None:
            return box
    return None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes in continuous coordinates (no +1); 0 when the union is empty or degenerate."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    if not union > 0.0 or not math.isfinite(union):
        return 0.0
    return inter / union


def accuracy_at_iou(ious: Iterable[float | None], threshold: float = 0.5) -> float:
    """Share (0–100) of examples whose IoU reaches the threshold; None (no valid box) counts as wrong."""
    values = list(ious)
    if not values:
        return 0.0
    return 100.0 * sum(iou is not None and iou >= threshold for iou in values) / len(values)


# --- aggregates and intervals ------------------------------------------------------------------------


def bootstrap_ci(
    scores: Sequence[float], *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example scores (same scale as the scores).

    The one bootstrap of ssmvlm: evaluation intervals over examples and the study's intervals over seeds
    (``study.stats.mean_interval``) both come from here.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return (0.0, 0.0)
    return percentile_interval(bootstrap_means(values, np.random.default_rng(seed), n_resamples), level)


def bootstrap_means(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """The means of ``resamples`` resamples (with replacement) of ``values``, drawn from ``rng``."""
    means = np.empty(resamples, dtype=np.float64)
    # Chunks keep the index matrix small for large evaluation sets; they draw what one call would, and leave
    # ``rng`` in the same state.
    chunk = max(1, 2_000_000 // values.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` share of bootstrap replicates: its (low, high) quantiles."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return (float(low), float(high))


def weighted_aggregates(tasks: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Weighted (example-count) and macro means per group and overall, on the tasks' 0–100 scale.

    Each task is ``{"group": "vqa"|"loc", "n": int, "score": float (0–100)}``.
    """
    groups = {
        "vqa": [t for t in tasks if t["group"] == "vqa"],
        "loc": [t for t in tasks if t["group"] == "loc"],
    }
    groups["overall"] = list(tasks)
    out: dict[str, dict[str, float]] = {}
    for name, members in groups.items():
        total = sum(t["n"] for t in members)
        if not members or total == 0:
            continue
        out[name] = {
            "weighted": sum(t["n"] * t["score"] for t in members) / total,
            "macro": sum(t["score"] for t in members) / len(members),
            "n": total,
            "tasks": len(members),
        }
    return out
