"""Orchestration with cheap fake stages: every cell once, resume/skip, failure isolation, ablations,
launchers, the report files and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_study_spec import FAKE_BACKBONES, fake_zoo  # noqa: F401 - the fixture, used by name
from typer.testing import CliRunner

from ssmvlm.cli import app
from ssmvlm.study import stages
from ssmvlm.study.cells import ERROR_FILE
from ssmvlm.study.launchers import GpuPoolLauncher, SubmititLauncher
from ssmvlm.study.matrix import ABLATIONS_FILE, Cell, DatasetCellConfig, StudyMatrix
from ssmvlm.study.runner import run_study, schedule
from ssmvlm.study.spec import ShapesSettings, SlurmSpec, StudySpec, load_spec

SPEC = """
name: fake
backbones: [fake_ssm, fake_vit]
initializations: [shapes-cls]
resolutions: [64]
eval:
  tasks: [shapes-vqa, shapes-refexp]
stabilization:
  variants: [connector, geometry, both]
execution:
  device: cpu
"""


class FakeStages:
    """Stage functions that record their calls and produce tiny, plausible outputs."""

    def __init__(self, loc: dict[str, float] | None = None, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.loc = loc or {}
        self.fail = fail or set()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeStages:
        for stage in ("dataset", "pretrain", "train", "eval"):
            monkeypatch.setitem(stages.STAGE_RUNNERS, stage, getattr(self, stage))
        return self

    def count(self, stage: str) -> int:
        return sum(1 for s, _ in self.calls if s == stage)

    def dataset(self, cell: Cell, run_dir: Path, upstream: dict, device: str) -> dict[str, Any]:
        self.calls.append(("dataset", ""))
        return {"path": str(run_dir)}

    def pretrain(self, cell: Cell, run_dir: Path, upstream: dict, device: str) -> dict[str, Any]:
        backbone = cell.config.backbone
        self.calls.append(("pretrain", backbone))
        (run_dir / "backbone.safetensors").write_bytes(b"weights")
        return {"checkpoint": str(run_dir / "backbone.safetensors"), "top1": 40.0 + len(backbone)}

    def train(self, cell: Cell, run_dir: Path, upstream: dict, device: str) -> dict[str, Any]:
        config = cell.config
        backbone = config.backbone
        self.calls.append(("train", backbone))
        assert Path(config.checkpoint.path(upstream)).is_file() and config.data.folder(upstream).is_dir()
        if backbone in self.fail:
            raise RuntimeError(f"boom in {backbone}")
        with (run_dir / "metrics.jsonl").open("w") as handle:
            for step in range(1, 21):
                handle.write(json.dumps({"step": step, "loss": 3.0 / step}) + "\n")
        return {
            "run_dir": str(run_dir),
            "family": backbone.split("_")[1],
            "kind": FAKE_BACKBONES[backbone],
            "params": 1000 * len(backbone),
            "tokens": 16,
            "top1": upstream[f"pretrain/{config.checkpoint.pretrain}"]["top1"],
        }

    def eval(self, cell: Cell, run_dir: Path, upstream: dict, device: str) -> dict[str, Any]:
        labels = cell.labels
        self.calls.append(("eval", labels["backbone"]))
        stabilized = labels["connector"] == "fused-gelu-mlp" and labels["resize_strategy"] == "letterbox-br"
        loc = 45.0 if stabilized else self.loc.get(labels["backbone"], 50.0)
        vqa = 60.0 + labels["seed"]

        def block(vqa: float, loc: float) -> dict[str, Any]:
            return {
                "tasks": {"shapes-vqa": {"score": vqa}, "shapes-refexp": {"score": loc}},
                "aggregates": {
                    "vqa": {"weighted": vqa, "ci95": [vqa - 3, vqa + 3]},
                    "loc": {"weighted": loc, "ci95": [loc - 3, loc + 3]},
                    "overall": {"weighted": (vqa + loc) / 2, "ci95": [0.0, 100.0]},
                },
            }

        return {"results": {**block(vqa, loc), "controls": {"blind": block(30.0, 0.5), "prior": block(35.0, 2.0)}}}


def _spec(tmp_path: Path, overrides: list[str] | None = None) -> StudySpec:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return load_spec(path, overrides=overrides)


@pytest.mark.usefixtures("fake_zoo")
def test_study_runs_each_cell_once_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStages().install(monkeypatch)
    out = tmp_path / "study"
    bench = {"rows": [{"backbone": "fake_ssm", "resolution": 64, "status": "ok", "latency_ms": 1.5}]}
    (tmp_path / "encoders.json").write_text(json.dumps(bench))
    outcome = run_study(_spec(tmp_path, [f"bench_results={tmp_path}/encoders.json"]), out, show_progress=False)
    assert [fake.count(s) for s in ("dataset", "pretrain", "train", "eval")] == [1, 2, 2, 2]
    assert not outcome.failed and not outcome.ablations
    assert set(outcome.status.values()) == {"done"}
    for name in ("report.md", "report.html", "results.csv", "spec.yaml", "matrix.json", "events.jsonl"):
        assert (out / name).is_file(), name
    for cell in outcome.matrix:
        assert (cell.run_dir(out) / "DONE").is_file() and (cell.run_dir(out) / "run.json").is_file()
    models = outcome.results[outcome.results["row_type"] == "model"]
    assert sorted(models["backbone"]) == ["fake_ssm", "fake_vit"] and set(models["status"]) == {"done"}
    assert sorted(outcome.results["row_type"].unique()) == ["blind", "model", "prior"]
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 6 and set(csv["loc"]) == {50.0, 0.5, 2.0} and "task:shapes-refexp" in csv
    main = pd.read_csv(out / "main_table.csv").set_index("backbone")
    assert main.loc["fake_ssm", "latency_ms"] == 1.5 and main.loc["fake_ssm", "top1"] == 48.0
    html = (out / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') >= 2 and "control: blind" in html
    markdown = (out / "report.md").read_text()
    assert "| fake_ssm | ssm | ssm |" in markdown and "](figures/scores.png)" in markdown

    (out / "report.md").unlink()  # `ssmvlm study report DIR` rebuilds it from the finished runs
    result = CliRunner().invoke(app, ["study", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert "fake_vit" in (out / "report.md").read_text() and fake.count("train") == 2

    fake.calls.clear()  # an interrupted or repeated study skips everything complete
    again = run_study(_spec(tmp_path), out, show_progress=False, write_report=False)  # no bench: same ids
    assert fake.calls == [] and set(again.status.values()) == {"cached"}

    grown_spec = _spec(tmp_path, ["backbones=[fake_ssm, fake_vit, fake_cnn]"])
    grown = run_study(grown_spec, out, show_progress=False, write_report=False)
    assert sorted(fake.calls) == [("eval", "fake_cnn"), ("pretrain", "fake_cnn"), ("train", "fake_cnn")]
    assert len(grown.results[grown.results["row_type"] == "model"]) == 3


@pytest.mark.usefixtures("fake_zoo")
def test_a_resumed_study_says_which_cells_other_code_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cells are reused by config; a study resumed under another commit names how many came from other code."""
    from ssmvlm.utils import provenance

    FakeStages().install(monkeypatch)
    spec, out = _spec(tmp_path, ["stabilization.enabled=false"]), tmp_path / "study"
    monkeypatch.setattr(provenance, "git_commit", lambda path=None: "1111111111111111-dirty")
    first = run_study(spec, out, show_progress=False, write_report=False)
    assert "other code" not in capsys.readouterr().err
    run_study(spec, out, show_progress=False, write_report=False)  # the same commit, dirty or not: silent
    assert "other code" not in capsys.readouterr().err

    monkeypatch.setattr(provenance, "git_commit", lambda path=None: "2222222222222222")
    (dataset,) = first.matrix.by_stage("dataset")
    (dataset.run_dir(out) / provenance.RUN_RECORD).unlink()  # a cell without its record is left out
    again = run_study(spec, out, show_progress=False, write_report=False)
    assert set(again.status.values()) == {"cached"}
    warning = " ".join(capsys.readouterr().err.split())  # the console writes to stderr
    assert f"reusing {len(first.matrix) - 1} finished cell(s) that other code computed" in warning
    assert "111111111111)" in warning and "delete a cell's folder" in warning


@pytest.mark.usefixtures("fake_zoo")
def test_training_mix_reaches_the_training_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real training adapter: the benchmark's train split plus the mix's, evaluation on the benchmark."""
    fake = FakeStages().install(monkeypatch)
    monkeypatch.setitem(stages.STAGE_RUNNERS, "train", stages.run_train)
    configs = []

    def train_vlm(config: Any, run_dir: Path, show_progress: bool) -> Path:
        configs.append(config)
        return run_dir

    monkeypatch.setattr("ssmvlm.train.loop.train_vlm", train_vlm)
    spec = _spec(tmp_path, ["backbones=[fake_ssm]", "benchmark.train_mix.size=40", "stabilization.enabled=false"])
    outcome = run_study(spec, tmp_path / "study", show_progress=False)
    assert set(outcome.status.values()) == {"done"} and fake.count("dataset") == 2
    datasets = {cell.config.namespace: cell.run_dir(tmp_path / "study") for cell in outcome.matrix.by_stage("dataset")}
    (config,) = configs
    assert config.data.train_json == str(datasets["benchmark"] / "train" / "llava.json")
    assert config.data.extra_json == [str(datasets["mix"] / "train" / "llava.json")]


@pytest.mark.usefixtures("fake_zoo")
def test_one_llm_warmup_starts_every_vlm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``llm_warmup`` on, one warm-up cell runs and every VLM cell loads its LLM; the tiny-LLM settings of the
    recipe shaped the warm-up and are not passed on to a run that loads a ready LLM."""
    fake = FakeStages().install(monkeypatch)
    monkeypatch.setitem(stages.STAGE_RUNNERS, "train", stages.run_train)
    warmups = []

    def warm_up_llm(config: Any, run_dir: Path, *, grid: int, show_progress: bool) -> Path:
        warmups.append((config, grid))
        fake.calls.append(("warmup", ""))
        (run_dir / "llm").mkdir()
        return run_dir / "llm"

    configs = []
    monkeypatch.setattr("ssmvlm.train.warmup.warm_up_llm", warm_up_llm)
    monkeypatch.setattr(
        "ssmvlm.train.loop.train_vlm", lambda config, run_dir, show_progress: configs.append(config) or run_dir
    )
    overrides = [
        "llm_warmup.enabled=true",
        "llm_warmup.grid=4",
        "seeds=[0,1]",
        "llm=tiny-llama-1m",
        "recipe.overrides={model.llm_init_std: 0.088, optim.max_steps: 5}",
        "stabilization.enabled=false",
    ]
    outcome = run_study(_spec(tmp_path, overrides), tmp_path / "study", show_progress=False)
    assert set(outcome.status.values()) == {"done"} and outcome.matrix.counts()["warmup"] == 1
    ((warm_config, grid),) = warmups
    assert grid == 4 and warm_config.model.llm == "tiny-llama-1m" and warm_config.model.llm_init_std == 0.088
    assert warm_config.data.train_json.endswith("train/llava.json") and warm_config.optim.max_steps == 5
    (warm_cell,) = outcome.matrix.by_stage("warmup")
    assert len(configs) == 4 and fake.count("pretrain") == 2
    # every VLM cell waits on the warm-up, one encoder's on its pretraining: the warm-up goes first
    assert [stage for stage, _ in fake.calls][:3] == ["dataset", "warmup", "pretrain"]
    for config in configs:
        assert config.model.llm == str((warm_cell.run_dir(tmp_path / "study") / "llm").resolve())
        assert config.model.llm_init_std is None and config.optim.max_steps == 5


@pytest.mark.usefixtures("fake_zoo")
def test_crashed_run_is_recorded_and_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStages(fail={"fake_vit"}).install(monkeypatch)
    out = tmp_path / "study"
    outcome = run_study(_spec(tmp_path), out, show_progress=False)
    failed = {key.split("/")[0]: outcome.status[key] for key in outcome.failed}
    assert failed == {"train": "failed", "eval": "blocked"}
    train_key = next(key for key in outcome.failed if key.startswith("train/"))
    error = (out / "runs" / train_key / ERROR_FILE).read_text()
    assert "RuntimeError: boom in fake_vit" in error and "Traceback" in error
    assert ("eval", "fake_ssm") in fake.calls and ("eval", "fake_vit") not in fake.calls
    rows = outcome.results.set_index("backbone")
    assert rows.loc["fake_vit", "status"] == "blocked" and "boom" in rows.loc["fake_vit", "error"]
    assert "boom in fake_vit" in (out / "report.md").read_text()

    fake.fail.clear()
    fake.calls.clear()  # rerunning retries only the failed cell and what it blocked
    outcome = run_study(_spec(tmp_path), out, show_progress=False, write_report=False)
    assert sorted(fake.calls) == [("eval", "fake_vit"), ("train", "fake_vit")] and not outcome.failed


@pytest.mark.usefixtures("fake_zoo")
def test_collapse_triggers_stabilization_ablation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStages(loc={"fake_vit": 1.0}).install(monkeypatch)
    out = tmp_path / "study"
    outcome = run_study(_spec(tmp_path, ["backbones=[fake_ssm, fake_vit, fake_cnn]"]), out, show_progress=False)
    assert [(r.variant, r.connector, r.resize_strategy) for r in outcome.ablations] == [
        ("connector", "fused-gelu-mlp", "letterbox"),
        ("geometry", "gelu-mlp", "letterbox-br"),
        ("both", "fused-gelu-mlp", "letterbox-br"),
    ]
    assert fake.count("pretrain") == 3  # the ablations reuse the pretraining
    assert fake.count("train") == 3 + 3 and (out / ABLATIONS_FILE).is_file()
    report = (out / "report.md").read_text()
    assert "loc-collapse" in report and "recovered" in report and "not recovered" in report
    assert (out / "figures" / "stabilization.png").is_file()


PROBE = """
import json, os
from pathlib import Path


def trivial_cell(cell, out, device, threads):
    marker = Path(out) / "ran" / f"{cell.id}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}))
    return {"status": "done", "seconds": 0.0, "error": None}
"""


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A trivial cell function in a module of its own, importable by workers without torch or the tests."""
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / "_study_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    import _study_probe

    return _study_probe.trivial_cell


def _independent_cells(count: int) -> StudyMatrix:
    matrix = StudyMatrix()
    for index in range(count):
        matrix.add(Cell(DatasetCellConfig(ShapesSettings(seed=index)), labels={"benchmark": str(index)}))
    return matrix


def test_submitit_debug_executor_runs_cells(tmp_path: Path, probe) -> None:
    # submitit's debug executor runs its jobs in this process through the same submit/result API as Slurm;
    # its local executor (a subprocess per job) needs several seconds per job to import torch here.
    matrix = _independent_cells(2)
    launcher = SubmititLauncher(tmp_path, SlurmSpec(timeout_min=5), cluster="debug", cell_function=probe)
    assert launcher.executor.cluster == "debug"
    status = schedule(matrix, tmp_path, launcher, show_progress=False, poll_seconds=0.05)
    assert status == {cell.key: "done" for cell in matrix}
    assert len(list((tmp_path / "ran").glob("*.json"))) == 2


def test_gpu_pool_pins_one_gpu_per_worker(tmp_path: Path, probe) -> None:
    matrix = _independent_cells(2)
    launcher = GpuPoolLauncher(tmp_path, gpus=2, cell_function=probe)
    try:
        status = schedule(matrix, tmp_path, launcher, show_progress=False, poll_seconds=0.05)
    finally:
        launcher.close()
    assert set(status.values()) == {"done"}
    seen = [json.loads(p.read_text()) for p in (tmp_path / "ran").glob("*.json")]
    assert len(seen) == 2 and {s["gpu"] for s in seen} <= {"0", "1"}
    by_pid: dict[int, set[str]] = {}
    for record in seen:
        by_pid.setdefault(record["pid"], set()).add(record["gpu"])
    assert all(len(gpus) == 1 for gpus in by_pid.values()) and os.getpid() not in by_pid


def test_cpu_pool_runs_cells_in_worker_processes(tmp_path: Path, probe) -> None:
    from ssmvlm.study.launchers import CpuPoolLauncher, make_launcher

    launcher = make_launcher(
        "local", tmp_path, device="cpu", gpus=0, threads=1, slurm=SlurmSpec(), cell_function=probe, cpu_workers=2
    )
    try:
        assert isinstance(launcher, CpuPoolLauncher) and launcher.capacity == 2
        status = schedule(_independent_cells(3), tmp_path, launcher, show_progress=False, poll_seconds=0.05)
    finally:
        launcher.close()
    assert set(status.values()) == {"done"}
    seen = [json.loads(p.read_text()) for p in (tmp_path / "ran").glob("*.json")]
    assert len(seen) == 3 and os.getpid() not in {s["pid"] for s in seen}


def test_several_workers_share_a_gpu(tmp_path: Path, probe) -> None:
    from ssmvlm.study.launchers import InProcessLauncher, make_launcher

    shared = make_launcher(
        "local",
        tmp_path,
        device="cuda",
        gpus=1,
        threads=None,
        slurm=SlurmSpec(),
        cell_function=probe,
        workers_per_gpu=3,
    )
    pool = GpuPoolLauncher(tmp_path, gpus=2, cell_function=probe, workers_per_gpu=3)
    single = make_launcher(
        "local", tmp_path, device="cuda", gpus=1, threads=None, slurm=SlurmSpec(), cell_function=probe
    )
    try:
        assert isinstance(shared, GpuPoolLauncher) and shared.capacity == 3
        assert pool.capacity == 6
        assert isinstance(single, InProcessLauncher)
    finally:
        shared.close()
        pool.close()


@pytest.mark.usefixtures("fake_zoo")
def test_cli_dry_run_and_overrides(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SPEC)
    runner = CliRunner()
    out = tmp_path / "study"
    result = runner.invoke(app, ["study", "--spec", str(spec_file), "--out", str(out), "--dry-run", "seeds=[0,1]"])
    assert result.exit_code == 0, result.output
    # two seeds share each backbone's pretraining (pretrain.seed defaults to 0)
    assert "eval 4" in result.output and "pretrain 2," in result.output and not out.joinpath("runs").exists()
    bad = runner.invoke(app, ["study", "--spec", str(spec_file), "--dry-run", "execution.gpu=2"])
    assert "execution.gpu: unknown key" in str(bad.exception)
    missing = runner.invoke(app, ["study", "--dry-run"])
    assert "give --preset NAME or --spec FILE" in str(missing.exception)


@pytest.mark.usefixtures("fake_zoo")
def test_report_when_every_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeStages(fail={"fake_ssm", "fake_vit"}).install(monkeypatch)
    outcome = run_study(_spec(tmp_path), tmp_path / "study", show_progress=False)
    assert len(outcome.failed) == 4 and outcome.results["status"].isin(["failed", "blocked"]).all()
    markdown = (tmp_path / "study" / "report.md").read_text()
    assert "No finished model runs." in markdown and "boom in fake_ssm" in markdown
