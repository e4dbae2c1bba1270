"""Evaluation results in the trackers training uses: TensorBoard event files, and W&B in offline mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval_runner import SHAPES, TASKS, FakeModel
from typer.testing import CliRunner

from ssmvlm.eval.runner import evaluate_model
from ssmvlm.eval.tracking import log_results, run_loggers, scalars, task_rows


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("eval")
    return evaluate_model(FakeModel(), TASKS, SHAPES, split="test", out_dir=out, batch_size=4, show_progress=False)


def read_events(folder: Path) -> tuple[dict[str, float], dict[str, str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    values = {tag: accumulator.Scalars(tag)[-1].value for tag in accumulator.Tags()["scalars"]}
    texts = {
        tag: accumulator.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in accumulator.Tags()["tensors"]
    }
    return values, texts


def test_scalars_and_table_come_from_results_json(results: dict) -> None:
    values = scalars(results)
    assert values["model/shapes-vqa/score"] == results["tasks"]["shapes-vqa"]["score"]
    assert values["blind/shapes-pope/score"] == results["controls"]["blind"]["tasks"]["shapes-pope"]["score"]
    assert values["model/aggregate/overall/weighted"] == results["aggregates"]["overall"]["weighted"]
    pope_accuracy = results["tasks"]["shapes-pope"]["metrics"]["prob"]["all"]["accuracy"]
    assert values["model/shapes-pope/metrics/prob/all/accuracy"] == pope_accuracy
    columns, rows = task_rows(results)
    assert columns == ["task", "group", "n", "model", "blind", "prior"]
    assert [row[0] for row in rows] == list(results["tasks"])


def test_tensorboard_event_file_holds_the_metrics_and_the_table(tmp_path: Path, results: dict) -> None:
    pytest.importorskip("tensorboard")
    assert log_results(results, tmp_path, ["tensorboard"], name="run-eval") == ["tensorboard"]
    values, texts = read_events(tmp_path / "tensorboard")
    expected = scalars(results)
    assert set(values) == {f"eval/{key}" for key in expected}
    for key, value in expected.items():
        assert values[f"eval/{key}"] == pytest.approx(value, rel=1e-6)  # stored as float32
    assert "| shapes-vqa (vqa) |" in texts["eval/results/text_summary"]


def test_evaluate_cli_logs_to_the_run_trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard")
    import ssmvlm.vlm
    from ssmvlm.cli import app

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"logging": {"loggers": ["tensorboard", "nonsense"]}}))
    assert run_loggers(run) == ["tensorboard", "nonsense"]
    monkeypatch.setattr(ssmvlm.vlm, "load_vlm", lambda run_dir, device=None: FakeModel())
    args = ["evaluate", "--run", str(run), "--tasks", "shapes", "--data", str(SHAPES), "--no-controls"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "unknown logger 'nonsense' ignored" in result.output
    values, _ = read_events(tmp_path / "a" / "tensorboard")
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert values["eval/model/shapes-refexp/score"] == pytest.approx(saved["tasks"]["shapes-refexp"]["score"])
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--loggers", ""])
    assert result.exit_code == 0 and not (tmp_path / "b" / "tensorboard").exists()


def test_a_tracker_that_is_not_installed_is_skipped_with_a_warning(
    tmp_path: Path, results: dict, monkeypatch, capsys
) -> None:
    import ssmvlm.train.metrics

    monkeypatch.setattr(ssmvlm.train.metrics, "importable", lambda name: False)
    assert log_results(results, tmp_path, ["tensorboard"], name="x") == []
    assert "tensorboard is not installed" in capsys.readouterr().err


def test_wandb_offline_run(tmp_path: Path, results: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false"}.items():
        monkeypatch.setenv(key, value)
    assert log_results(results, tmp_path, ["wandb"], name="run-eval", config={"tasks": TASKS}) == ["wandb"]
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    # the run's records, as `wandb sync` would upload them
    store = datastore.DataStore()
    store.open_for_scan(str(next(run.glob("run-*.wandb"))))
    logged: dict = {}
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                logged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    for key, value in scalars(results).items():
        assert logged[f"eval/{key}"] == pytest.approx(value)
    (table,) = run.glob("files/media/table/eval/tasks_*.table.json")
    columns, rows = task_rows(results)
    assert json.loads(table.read_text()) == {"columns": columns, "data": rows}
