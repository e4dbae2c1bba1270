"""The task registry: every evaluation task by name (loader + prompt + answer extraction + metric)."""

from __future__ import annotations

from ssmvlm.eval.tasks import gqa, ocidref, pope, refer, tallyqa, textvqa, vizwiz, vqav2
from ssmvlm.eval.tasks.base import Example, ModelOutput, ScoreContext, Scored, Task, dataset_root
from ssmvlm.eval.tasks.layouts import add_alternative_layouts
from ssmvlm.utils.errors import ConfigError

# Each task reads its official layout, and also vlm-evaluation's folders and Hugging Face parquet shards.
TASKS: dict[str, Task] = add_alternative_layouts(
    {
        task.name: task
        for module in (vqav2, gqa, vizwiz, textvqa, pope, tallyqa, refer, ocidref)
        for task in module.TASKS
    }
)
# Names that stand for several tasks: the ShapeScenes suite, and the suite behind the paper's weighted scores.
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "shapes": ("shapes-vqa", "shapes-pope", "shapes-refexp"),
    "suite": (
        "vqav2",
        "gqa",
        "vizwiz",
        "textvqa-ocr",
        "textvqa-pure",
        "pope",
        "tallyqa",
        "refcoco",
        "refcoco+",
        "refcocog",
        "ocid-ref",
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError("tasks", f"unknown task '{name}'", allowed=sorted(TASKS) + sorted(TASK_GROUPS))
    return TASKS[name]


def expand_task_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """Task names with group names replaced by their members, each task once, in the given order."""
    expanded: list[str] = []
    for name in names:
        for member in TASK_GROUPS.get(name, (name,)):
            if member not in expanded:
                expanded.append(member)
    return expanded


__all__ = [
    "TASKS",
    "TASK_GROUPS",
    "Example",
    "ModelOutput",
    "ScoreContext",
    "Scored",
    "Task",
    "dataset_root",
    "expand_task_names",
    "get_task",
]
