"""Where else a task's data may come from: vlm-evaluation's folders and Hugging Face parquet shards.

Each task's own loader reads the official layout. :func:`with_alternative_layouts` puts the other layouts in
front of it: the first one detected under the dataset folder is read, and the official loader runs when none
is (so its error, listing the official files, is what a user with an unrecognized folder sees).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ssmvlm.eval.tasks import hf_parquet, vlm_eval_layouts
from ssmvlm.eval.tasks.base import Example, Task
from ssmvlm.utils.errors import DataError

Detect = Callable[[Path], bool]
Load = Callable[[Path, str], list[Example]]


def alternative_layouts() -> dict[str, list[tuple[str, Detect, Load]]]:
    """Task name → [(layout name, detect, load)], in the order they are tried."""
    layouts: dict[str, list[tuple[str, Detect, Load]]] = {}
    for task, name, detect, load in vlm_eval_layouts.iter_tasks():
        layouts.setdefault(task, []).append((name, detect, load))
    for task, detect, load in hf_parquet.iter_tasks():
        layouts.setdefault(task, []).append(("Hugging Face parquet", detect, load))
    return layouts


def with_alternative_layouts(task: Task, layouts: list[tuple[str, Detect, Load]]) -> Task:
    official = task.load

    names = ", ".join(dict.fromkeys(name for name, _, _ in layouts))

    def load(root: Path, split: str) -> list[Example]:
        for _, detect, alternative in layouts:
            if detect(root):
                return alternative(root, split)
        try:
            return official(root, split)
        except DataError as exc:
            # The official layout's files are missing too (not a bad record): name every layout looked for.
            if exc.record is not None or exc.field is not None or " found" not in str(exc):
                raise
            raise DataError(exc.file, f"{str(exc)[len(exc.file) + 2 :]}; layouts also tried: {names}") from None
    return replace(task, load=load, describe=f"{task.describe}; also {names}")


def add_alternative_layouts(tasks: dict[str, Task]) -> dict[str, Task]:
    layouts = alternative_layouts()
    return {
        name: with_alternative_layouts(task, layouts[name]) if name in layouts else task for name, task in tasks.items()
    }
