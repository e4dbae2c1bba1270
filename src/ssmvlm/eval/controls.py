"""Controls reported beside every model: the blind run and the prior baseline.

- blind: the same model with its image features zeroed (``blind=True``), run by the runner's
  :class:`~ssmvlm.eval.runner.ModelPredictor`; it measures how much the score owes to language priors.
- prior: no model at all. VQA-type tasks answer the most frequent reference answer of the example's question
  type; localization tasks answer the mean ground-truth box of the example's category (in the scored frame).
  The prior is fitted on the ``train`` split where the dataset has one (ShapeScenes), otherwise on the
  evaluated examples themselves (``fit_on: "in-sample"``, which flatters the prior, never the model).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmvlm.eval.tasks import Example, ModelOutput, ScoreContext, Task, dataset_root
from ssmvlm.eval.tasks.boxes import ground_truth
from ssmvlm.utils.errors import DataError

PRIOR_FIT_SPLIT = "train"


def most_frequent(values: Sequence[str]) -> str:
    """The most frequent value; ties go to the smallest value so the prior is deterministic."""
    counts = Counter(values)
    return min(counts, key=lambda value: (-counts[value], value))


def fit_answer_prior(examples: Sequence[Example]) -> tuple[dict[str, str], str]:
    """(question type → most frequent canonical answer, overall most frequent answer)."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for example in examples:
        by_key[example.prior_key].append(str(example.target["canonical"]))
    overall = most_frequent([answer for answers in by_key.values() for answer in answers])
    return {key: most_frequent(answers) for key, answers in by_key.items()}, overall


def fit_box_prior(examples: Sequence[Example], context: ScoreContext) -> tuple[dict[str, str], str]:
    """(category → mean ground-truth box as printed by a model, overall mean box), in the scored frame."""
    frame = context.box_convention if context.image_transform is not None else "raw"
    by_key: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for example in examples:
        box = ground_truth(example.target, frame, context.image_transform)
        if box is not None:
            by_key[example.prior_key].append(box)

    def mean_box(boxes: Sequence[tuple[float, ...]]) -> str:
        coords = [sum(box[i] for box in boxes) / len(boxes) for i in range(4)]
        return "[" + ", ".join(f"{value:.2f}" for value in coords) + "]"

    everything = [box for boxes in by_key.values() for box in boxes]
    return {key: mean_box(boxes) for key, boxes in by_key.items()}, mean_box(everything)


@dataclass
class PriorPredictor:
    """Answers every example from per-question-type statistics of the ground truth."""

    answers: dict[str, tuple[dict[str, str], str]]  # task → (per-key answer, fallback)
    fit_on: dict[str, str]  # task → "train" | "in-sample"
    image_transform: Any = None

    @classmethod
    def fit(
        cls,
        tasks: Sequence[Task],
        examples: Mapping[str, list[Example]],
        data_root: Path | Mapping[str, Path],
        split: str,
        context: ScoreContext,
    ) -> PriorPredictor:
        answers, fit_on = {}, {}
        for task in tasks:
            fit_examples, fit_on[task.name] = examples[task.name], "in-sample"
            if task.split_aware and split != PRIOR_FIT_SPLIT:
                try:
                    fit_examples = task.load(dataset_root(data_root, task.family), PRIOR_FIT_SPLIT)
                    fit_on[task.name] = PRIOR_FIT_SPLIT
                except DataError:
                    pass  # no train split on disk: fall back to the evaluated examples
            fit = fit_box_prior if task.group == "loc" else lambda ex, _ctx: fit_answer_prior(ex)
            answers[task.name] = fit(fit_examples, context)
        return cls(answers, fit_on, context.image_transform)

    def predict(self, task: Task, examples: Sequence[Example]) -> list[ModelOutput]:
        per_key, fallback = self.answers[task.name]
        return [ModelOutput(per_key.get(example.prior_key, fallback)) for example in examples]
