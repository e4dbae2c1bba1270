"""Running an evaluation: batched predictions written as produced, resume, scoring, results files.

Layout of ``out_dir``::

    predictions.jsonl                  the model's outputs, one record per example, appended as produced
    controls/{blind,prior}/predictions.jsonl
    results.json, results.md, run.json

A rerun reads the predictions already on disk and only asks the model for the missing examples. Scores are
recomputed from the stored raw outputs every time, so the results never depend on which run produced them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ssmvlm.eval.metrics import bootstrap_ci, weighted_aggregates
from ssmvlm.eval.protocol import EvalModel
from ssmvlm.eval.tasks import (
    Example,
    ModelOutput,
    ScoreContext,
    Task,
    dataset_root,
    expand_task_names,
    get_task,
)
from ssmvlm.eval.tasks.base import BOX_CONVENTIONS
from ssmvlm.utils.errors import ConfigError, DataError
from ssmvlm.utils.io import append_jsonl, atomic_write_json, atomic_write_text, iter_jsonl
from ssmvlm.utils.progress import progress_bar

if TYPE_CHECKING:
    from PIL import Image

PREDICTIONS = "predictions.jsonl"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
BOOTSTRAP_RESAMPLES = 1000


class Predictor(Protocol):
    """Something that answers a batch of a task's examples (the model, the blind model, the prior)."""

    image_transform: Any

    def predict(self, task: Task, examples: Sequence[Example]) -> list[ModelOutput]: ...


def load_image(example: Example, task: Task) -> Image.Image:
    """The example's image (a file, or an image cell of a parquet shard), its errors naming task and example."""
    from ssmvlm.data.images import open_image

    return open_image(example.image, record=f"{task.name} {example.id}")


@dataclass
class ModelPredictor:
    """Asks an :class:`EvalModel` for text and/or first-token candidate probabilities."""

    model: EvalModel
    blind: bool = False
    max_new_tokens: int = 128

    @property
    def image_transform(self) -> Any:
        return getattr(self.model, "image_transform", None)

    def predict(self, task: Task, examples: Sequence[Example]) -> list[ModelOutput]:
        images = [load_image(example, task) for example in examples]
        prompts = [example.prompt for example in examples]
        texts: list[str] = [""] * len(examples)
        probs: list[dict[str, float] | None] = [None] * len(examples)
        if task.generate:
            texts = _checked(
                self.model.generate(images, prompts, max_new_tokens=self.max_new_tokens, blind=self.blind),
                len(examples),
                "generate",
            )
            texts = [text if isinstance(text, str) else "" if text is None else str(text) for text in texts]
        if task.candidates:
            raw = _checked(
                self.model.first_token_probs(images, prompts, list(task.candidates), blind=self.blind),
                len(examples),
                "first_token_probs",
            )
            if not all(isinstance(p, dict) for p in raw):
                raise DataError(
                    "model.first_token_probs", "expected one {candidate: probability} dict per example"
                )
            probs = [{c: float(p.get(c, 0.0)) for c in task.candidates} for p in raw]
            if not task.generate:
                texts = [max(task.candidates, key=p.__getitem__) for p in probs]  # type: ignore[union-attr]
        return [ModelOutput(text, p) for text, p in zip(texts, probs, strict=True)]


def _checked(values: Any, expected: int, method: str) -> list:
    if not isinstance(values, list) or len(values) != expected:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise DataError(f"model.{method}", f"returned {got} results for a batch of {expected}")
    return values


def select_examples(examples: list[Example], limit: int | None, seed: int, task_name: str) -> list[Example]:
    """All examples, or a deterministic subsample of ``limit`` of them (fixed by the seed), in order."""
    if limit is None or limit >= len(examples):
        return examples
    if limit < 1:
        raise ConfigError("limit", f"must be a positive number of examples, got {limit}")
    chosen = set(random.Random(f"{seed}:{task_name}").sample(range(len(examples)), limit))
    return [example for index, example in enumerate(examples) if index in chosen]


def read_predictions(path: Path, known: Mapping[str, Mapping[str, Example]]) -> dict[tuple[str, str], dict]:
    """Finished records keyed by (task, id); unknown ids and duplicates are errors naming file and line."""
    _drop_truncated_tail(path)
    done: dict[tuple[str, str], dict] = {}
    try:
        records = list(iter_jsonl(path, tolerate_truncated_tail=True))
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for line, record in enumerate(records, start=1):
        if not isinstance(record, dict) or "task" not in record or "id" not in record:
            raise DataError(path, "expected an object with 'task' and 'id'", record=f"line {line}")
        task, example_id = str(record["task"]), str(record["id"])
        if task not in known:
            continue  # another task evaluated into the same folder earlier
        if example_id not in known[task]:
            raise DataError(
                path, f"id '{example_id}' is not an example of task '{task}'", record=f"line {line}"
            )
        if (task, example_id) in done:
            raise DataError(
                path, f"duplicate prediction for task '{task}' id '{example_id}'", record=f"line {line}"
            )
        if not isinstance(record.get("raw_output"), str):
            raise DataError(path, "raw_output must be a string", record=f"line {line}", field="raw_output")
        probs = record.get("probs")
        if probs is not None and not (
            isinstance(probs, dict) and all(isinstance(v, (int, float)) for v in probs.values())
        ):
            raise DataError(
                path, "probs must be null or {candidate: number}", record=f"line {line}", field="probs"
            )
        done[(task, example_id)] = record
    return done


def _drop_truncated_tail(path: Path) -> None:
    """Cut a last line left unfinished by a crash, so that new records do not get glued onto it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(-1, 2)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        complete = handle.read().rfind(b"\n") + 1
        handle.truncate(complete)


def predict_all(
    predictor: Predictor,
    label: str,
    tasks: Sequence[Task],
    selected: Mapping[str, list[Example]],
    full: Mapping[str, Mapping[str, Example]],
    path: Path,
    *,
    batch_size: int,
    context: ScoreContext,
    show_progress: bool = True,
) -> dict[tuple[str, str], dict]:
    """Every selected example's record, asking ``predictor`` only for those not yet in ``path``."""
    done = read_predictions(path, full)
    with progress_bar(disable=not show_progress) as progress:
        for task in tasks:
            todo = [e for e in selected[task.name] if (task.name, e.id) not in done]
            bar = progress.add_task(f"{label} {task.name}", total=len(selected[task.name]), status="")
            progress.update(bar, completed=len(selected[task.name]) - len(todo))
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                for example, output in zip(batch, predictor.predict(task, batch), strict=True):
                    scored = task.score(example, output, context)
                    record = {
                        "task": task.name,
                        "id": example.id,
                        "prompt": example.prompt,
                        "raw_output": output.text,
                        "probs": output.probs,
                        "answer": scored.answer,
                        "score": scored.score,
                        "subset": example.subset,
                    }
                    append_jsonl(path, record)
                    done[(task.name, example.id)] = record
                progress.update(bar, advance=len(batch))
    return done


def summarize(
    tasks: Sequence[Task],
    selected: Mapping[str, list[Example]],
    records: Mapping[tuple[str, str], dict],
    context: ScoreContext,
    seed: int,
) -> dict[str, Any]:
    """Per-task scores (0–100) with bootstrap 95% intervals, breakdowns, task metrics and the aggregates."""
    task_results: dict[str, Any] = {}
    pooled: dict[str, list[float]] = {"vqa": [], "loc": [], "overall": []}
    for task in tasks:
        scored_records = []
        for example in selected[task.name]:
            record = records[(task.name, example.id)]
            scored = task.score(example, ModelOutput(record["raw_output"], record.get("probs")), context)
            scored_records.append(
                {
                    "id": example.id,
                    "subset": example.subset,
                    "target": example.target,
                    "answer": scored.answer,
                    "score": scored.score,
                    "extra": scored.extra,
                }
            )
        scores = [r["score"] for r in scored_records]
        low, high = bootstrap_ci(scores, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        result: dict[str, Any] = {
            "group": task.group,
            "n": len(scores),
            "score": 100.0 * sum(scores) / len(scores) if scores else 0.0,
            "ci95": [100.0 * low, 100.0 * high],
        }
        subsets = sorted({r["subset"] for r in scored_records if r["subset"] is not None})
        if len(subsets) > 1:
            result["breakdown"] = {
                subset: {"n": len(members), "score": 100.0 * sum(members) / len(members)}
                for subset in subsets
                for members in [[r["score"] for r in scored_records if r["subset"] == subset]]
            }
        if task.summarize is not None and scored_records:
            result["metrics"] = task.summarize(scored_records)
        task_results[task.name] = result
        pooled[task.group].extend(scores)
        pooled["overall"].extend(scores)
    aggregates = weighted_aggregates([{"name": k, **v} for k, v in task_results.items()])
    for group, values in aggregates.items():
        low, high = bootstrap_ci(pooled[group], n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        values["ci95"] = [100.0 * low, 100.0 * high]
    return {"tasks": task_results, "aggregates": aggregates}


def load_tasks(
    task_names: Sequence[str], data_root: Path | Mapping[str, Path], split: str
) -> tuple[list[Task], dict[str, list[Example]]]:
    tasks = [get_task(name) for name in expand_task_names(list(task_names))]
    if not tasks:
        raise ConfigError("tasks", "no task given", allowed=None)
    examples = {}
    for task in tasks:
        examples[task.name] = task.load(dataset_root(data_root, task.family), split)
        if not examples[task.name]:
            raise DataError(dataset_root(data_root, task.family), f"task '{task.name}' has no examples")
    return tasks, examples


def check_tasks_runnable(model: Any, tasks: Sequence[Task]) -> None:
    """Refuse, before any model work, a task this model cannot answer (first-token candidates that are not
    single tokens of its tokenizer); found inside the task's own run, it would fail after earlier tasks ran."""
    token_id = getattr(model, "candidate_token_id", None)  # models without a tokenizer (fakes) skip this
    if token_id is None:
        return
    for task in tasks:
        for candidate in task.candidates:
            try:
                token_id(candidate)
            except ConfigError as exc:
                raise ConfigError(
                    "tasks", f"task '{task.name}' cannot run with this model's tokenizer: {exc}"
                ) from None


def evaluate_model(
    model: EvalModel,
    tasks: Sequence[str],
    data_root: Path | Mapping[str, Path],
    *,
    split: str = "test",
    out_dir: str | Path,
    limit: int | None = None,
    batch_size: int = 16,
    controls: bool = True,
    seed: int = 0,
    box_convention: str | None = None,
    max_new_tokens: int = 128,
    show_progress: bool = True,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks`` and the blind/prior controls; returns what results.json holds.

    ``box_convention`` picks the frame boxes are scored in; None: the frame the model answers in
    (``model.box_frame``, raw for a model that does not say).
    """
    from ssmvlm.eval.controls import PriorPredictor
    from ssmvlm.eval.report import render_markdown
    from ssmvlm.utils.provenance import write_run_record

    if box_convention is None:
        box_convention = getattr(model, "box_frame", "raw")
    if box_convention not in BOX_CONVENTIONS:
        raise ConfigError(
            "box_convention", f"unknown convention '{box_convention}'", allowed=list(BOX_CONVENTIONS)
        )
    if box_convention == "model" and getattr(model, "image_transform", None) is None:
        raise ConfigError("box_convention", "'model' needs a model with an image_transform (its input frame)")
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "tasks": list(tasks),
        "data_root": _describe_root(data_root),
        "split": split,
        "limit": limit,
        "batch_size": batch_size,
        "controls": controls,
        "box_convention": box_convention,
        "max_new_tokens": max_new_tokens,
        **(dict(run_info) if run_info else {}),
    }

    task_list, all_examples = load_tasks(tasks, data_root, split)
    check_tasks_runnable(model, task_list)
    # Written once every task's data was read and checked: a failed start leaves an earlier evaluation's
    # provenance in place.
    write_run_record(out, config, seed)
    full = {name: {e.id: e for e in examples} for name, examples in all_examples.items()}
    selected = {name: select_examples(examples, limit, seed, name) for name, examples in all_examples.items()}
    context = ScoreContext(getattr(model, "image_transform", None), box_convention)  # type: ignore[arg-type]

    variants: dict[str, tuple[Predictor, Path]] = {
        "model": (ModelPredictor(model, blind=False, max_new_tokens=max_new_tokens), out / PREDICTIONS)
    }
    if controls:
        variants["blind"] = (
            ModelPredictor(model, blind=True, max_new_tokens=max_new_tokens),
            out / "controls" / "blind" / PREDICTIONS,
        )
        prior = PriorPredictor.fit(task_list, all_examples, data_root, split, context)
        variants["prior"] = (prior, out / "controls" / "prior" / PREDICTIONS)

    summaries = {}
    for label, (predictor, path) in variants.items():
        records = predict_all(
            predictor,
            label,
            task_list,
            selected,
            full,
            path,
            batch_size=batch_size,
            context=context,
            show_progress=show_progress,
        )
        summaries[label] = summarize(task_list, selected, records, context, seed)

    results: dict[str, Any] = {**summaries.pop("model"), "config": {**config, "seed": seed}}
    if controls:
        results["controls"] = summaries
        results["controls"]["prior"]["fit_on"] = variants["prior"][0].fit_on  # type: ignore[attr-defined]
    atomic_write_json(out / RESULTS_JSON, results)
    atomic_write_text(out / RESULTS_MD, render_markdown(results))
    return results


def _describe_root(data_root: Path | Mapping[str, Path]) -> Any:
    if isinstance(data_root, Mapping):
        return {k: str(v) for k, v in data_root.items()}
    return str(data_root)


def evaluate_run(
    run_dir: str | Path,
    tasks: Sequence[str],
    data_root: Path | Mapping[str, Path],
    *,
    device: str | None = None,
    out_dir: str | Path | None = None,
    loggers: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load a trained run with ``ssmvlm.vlm.load_vlm`` and evaluate it (into ``RUN_DIR/eval`` by default).

    The results also go to ``loggers`` (default: the trackers the run trained with, ``logging.loggers``).
    """
    from ssmvlm.eval.tracking import log_results, run_loggers
    from ssmvlm.vlm import load_vlm  # imported here: the VLM package pulls in torch and transformers

    model = load_vlm(run_dir, device=device)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    results = evaluate_model(model, tasks, data_root, out_dir=out, run_info={"run_dir": str(run_dir)}, **kwargs)
    trackers = run_loggers(run_dir) if loggers is None else loggers
    log_results(results, out, trackers, name=f"{Path(run_dir).name}-eval", config=results.get("config"))
    return results
