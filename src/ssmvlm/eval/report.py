"""The Markdown results table: tasks, weighted and macro VQA / Loc / Overall, model beside controls."""

from __future__ import annotations

from typing import Any

_AGGREGATE_LABELS = (("vqa", "VQA"), ("loc", "Loc"), ("overall", "Overall"))


def _cell(entry: dict[str, Any] | None, key: str = "score") -> str:
    if not entry:
        return "–"
    text = f"{entry[key]:.2f}"
    if key == "score" or key == "weighted":
        low, high = entry.get("ci95", (None, None))
        if low is not None:
            text += f" [{low:.1f}, {high:.1f}]"
    return text


def render_markdown(results: dict[str, Any]) -> str:
    """One row per task and aggregate; columns: examples, the model, then each control (scores 0–100)."""
    controls = results.get("controls", {})
    columns = ["model", *controls]
    sources = {"model": results, **controls}
    header = "| | n | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for name, task in results["tasks"].items():
        cells = [_cell(sources[c]["tasks"].get(name)) for c in columns]
        lines.append(f"| {name} ({task['group']}) | {task['n']} | " + " | ".join(cells) + " |")
        for subset, part in task.get("breakdown", {}).items():
            parts = [sources[c]["tasks"].get(name, {}).get("breakdown", {}).get(subset) for c in columns]
            cells = [f"{p['score']:.2f}" if p else "–" for p in parts]
            lines.append(f"| &nbsp;&nbsp;{name}: {subset} | {part['n']} | " + " | ".join(cells) + " |")
    for key, label in _AGGREGATE_LABELS:
        if key not in results["aggregates"]:
            continue
        weighted = [_cell(sources[c]["aggregates"].get(key), "weighted") for c in columns]
        macro = [_cell(sources[c]["aggregates"].get(key), "macro") for c in columns]
        n = results["aggregates"][key]["n"]
        lines.append(f"| **Weighted {label}** | {n} | " + " | ".join(f"**{c}**" for c in weighted) + " |")
        lines.append(f"| Macro {label} | {n} | " + " | ".join(macro) + " |")
    config = results.get("config", {})
    notes = [
        "",
        "Scores are 0–100 with bootstrap 95% intervals in brackets; weighted = example-count weighted mean.",
        f"Localization box convention: {config.get('box_convention', 'raw')} "
        "(both conventions are in results.json under each task's metrics).",
    ]
    if "prior" in controls:
        fit = ", ".join(f"{t}: {where}" for t, where in controls["prior"].get("fit_on", {}).items())
        notes.append(f"Prior baseline fitted on: {fit}.")
    return "\n".join(lines + notes) + "\n"
