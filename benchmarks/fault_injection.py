"""SIGKILL `ssmvlm study`, `train`, `pretrain run` and `evaluate` at random points, rerun, and check the result.

For every command: one uninterrupted reference run, then ``--kills`` trials, each in a fresh folder: start the
command, SIGKILL its whole process group at a random moment of its reference wall time, snapshot what had
finished, rerun the same command to completion, and check that

- the rerun finishes (exit 0);
- nothing finished at the kill is recomputed (train: the rerun resumes from the latest checkpoint on disk;
  pretrain: the log up to the checkpoint is kept as it was; evaluate: the complete prediction records are kept
  byte for byte and not asked again; study: finished cells' files are untouched);
- the final results are identical to the reference (weights byte for byte; scores and predictions equal);
- no partial file was read as complete (every JSON file parses, the logs hold each step or record once; a
  partial file read as complete would also show up as a result that differs from the reference).

A kill that lands after the command already exited is not counted (another moment is drawn). Then two
``ssmvlm study`` processes are started on one folder: the second must be refused. Everything runs on CPU with
one thread; the runs are tiny (seconds each).

    python benchmarks/fault_injection.py --kills 20 --json /tmp/fault_injection.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSMVLM = str(Path(sys.executable).parent / "ssmvlm")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "200"}

TINY_STUDY = """
name: tiny
benchmark:
  shapes: {size: 40, image_size: 32, seed: 0,
           scene: {difficulty: easy, min_objects: 1, max_objects: 1, clutter: none, non_square_share: 0.0,
                   vqa_per_image: 2, refs_per_image: 1}}
backbones: [vit_nano]
initializations: [shapes-cls]
resolutions: [32]
llm: tiny-llama-1m
recipe: {preset: shapes, overrides: {optim.max_steps: 4, model.prompt_format: plain, logging.checkpoint_every: 1}}
seeds: [0]
pretrain: {image_size: 32, images_seen: 64, batch_size: 16}
eval: {tasks: [shapes-vqa, shapes-pope], split: test, limit: 8, batch_size: 2, controls: true, max_new_tokens: 4}
stabilization: {enabled: false}
execution: {device: cpu, gpus: 0, launcher: local, threads: 1}
"""


def weights_digest(path: Path) -> str:
    """sha256 over a safetensors file's tensors (name, dtype, shape, bytes) and its metadata, both sorted.

    Not the file's bytes: safetensors writes the metadata map in an order that changes between processes.
    """
    import torch
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), "pt") as handle:
        digest.update(json.dumps(handle.metadata() or {}, sort_keys=True).encode())
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous().reshape(-1)
            digest.update(f"{name}|{tensor.dtype}|{tensor.numel()}|".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def json_lines(path: Path) -> list[str]:
    """Complete lines of a JSONL file (a last line cut by the kill is not complete)."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]  # the part after the last newline is incomplete


def unparsable_json(folder: Path) -> list[str]:
    bad = []
    for path in folder.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            bad.append(str(path.relative_to(folder)))
    for path in folder.rglob("*.jsonl"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                json.loads(line)
            except ValueError:
                bad.append(f"{path.relative_to(folder)}:{number}")
    return bad


@dataclass
class Run:
    code: int | None
    seconds: float
    log: str


def run(cmd: list[str], log: Path, *, kill_after: float | None = None, timeout: float = 600) -> Run:
    """Run ``cmd`` in its own process group; with ``kill_after``, SIGKILL the group after that many seconds."""
    start = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        try:
            code = process.wait(timeout=kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None  # killed
    return Run(code, time.perf_counter() - start, log.read_text())


# -- the four commands ------------------------------------------------------------------------------------


@dataclass
class Subject:
    """One command under test: how to run it, what counts as finished work, what its result is."""

    name: str
    work: Path
    data: Path

    def command(self, out: Path) -> list[str]:
        raise NotImplementedError

    def finished(self, out: Path) -> dict[str, Any]:
        """What had finished when the process was killed (read after the kill, before the rerun)."""
        raise NotImplementedError

    def recomputed(self, out: Path, finished: dict[str, Any], log: str) -> list[str]:
        """Problems if finished work was redone or rewritten by the rerun."""
        raise NotImplementedError

    def result(self, out: Path) -> Any:
        """The final result, compared with the reference run's."""
        raise NotImplementedError

    def had_progress(self, finished: dict[str, Any]) -> bool:
        """Whether the killed process had finished some work (a kill during start-up has nothing to keep)."""
        raise NotImplementedError


TRAIN_OVERRIDES = [
    "model.backbone=vit_nano",
    "model.image_size=32",
    "model.llm=tiny-llama-1m",
    "recipe=shapes",
    "optim.global_batch_size=4",
    "optim.per_device_batch_size=4",
    "optim.max_steps=8",
    "logging.checkpoint_every=1",
    "logging.log_every=1",
]


class Train(Subject):
    def command(self, out: Path) -> list[str]:
        data = f"data.train_json={self.data / 'train' / 'llava.json'}"
        return [SSMVLM, "train", *TRAIN_OVERRIDES, data, "--out", str(out), "--resume", "--quiet", "--threads", "1"]

    def finished(self, out: Path) -> dict[str, Any]:
        pointer = out / "checkpoints" / "latest.json"
        step = json.loads(pointer.read_text())["step"] if pointer.is_file() else 0
        weights = out / "model.safetensors"
        return {"step": step, "weights_mtime": weights.stat().st_mtime_ns if weights.is_file() else None}

    def recomputed(self, out: Path, finished: dict[str, Any], log: str) -> list[str]:
        if finished["weights_mtime"] is not None:  # the run had finished: the rerun must not touch it
            same = (out / "model.safetensors").stat().st_mtime_ns == finished["weights_mtime"]
            return [] if same else ["a finished run's weights were rewritten"]
        if finished["step"] and f"(step {finished['step']})" not in log:
            return [f"did not resume from the checkpoint of step {finished['step']}"]
        if not finished["step"] and "resumed from" in log:
            return ["resumed although no checkpoint was complete"]
        return []

    def had_progress(self, finished: dict[str, Any]) -> bool:
        return bool(finished["step"]) or finished["weights_mtime"] is not None

    def result(self, out: Path) -> Any:
        steps = [json.loads(line)["step"] for line in json_lines(out / "metrics.jsonl")]
        return {"weights": weights_digest(out / "model.safetensors"), "logged_steps": steps}


class Pretrain(Subject):
    def command(self, out: Path) -> list[str]:
        return [
            SSMVLM, "pretrain", "run", "--backbone", "vit_nano", "--data", str(self.data), "--out", str(out),
            "--images-seen", "96", "--batch-size", "8", "--image-size", "32", "--threads", "1",
            "--set", "checkpoint_every_steps=1", "--set", "log_every_steps=1", "--set", "data.max_eval_images=16",
        ]  # fmt: skip

    def finished(self, out: Path) -> dict[str, Any]:
        state = out / "checkpoint" / "state.json"
        step = json.loads(state.read_text())["step"] if state.is_file() else 0
        kept = [line for line in json_lines(out / "metrics.jsonl") if json.loads(line).get("step", 0) <= step]
        weights = out / "backbone.safetensors"
        return {"step": step, "log": kept, "weights_mtime": weights.stat().st_mtime_ns if weights.is_file() else None}

    def recomputed(self, out: Path, finished: dict[str, Any], log: str) -> list[str]:
        if finished["weights_mtime"] is not None:
            same = (out / "backbone.safetensors").stat().st_mtime_ns == finished["weights_mtime"]
            return [] if same else ["a finished run's weights were rewritten"]
        after = json_lines(out / "metrics.jsonl")
        if after[: len(finished["log"])] != finished["log"]:
            return [f"the log up to the checkpoint of step {finished['step']} changed"]
        return []

    def had_progress(self, finished: dict[str, Any]) -> bool:
        return bool(finished["step"]) or finished["weights_mtime"] is not None

    def result(self, out: Path) -> Any:
        metrics = json.loads((out / "metrics.json").read_text())
        comparable = {k: v for k, v in metrics.items() if "seconds" not in k and "per_second" not in k}
        steps = [json.loads(line).get("step") for line in json_lines(out / "metrics.jsonl")]
        return {"weights": weights_digest(out / "backbone.safetensors"), "metrics": comparable, "logged_steps": steps}


class Evaluate(Subject):
    files = ("predictions.jsonl", "controls/blind/predictions.jsonl", "controls/prior/predictions.jsonl")

    def command(self, out: Path) -> list[str]:
        return [
            SSMVLM, "evaluate", "--run", str(self.work / "train-reference"), "--tasks", "shapes-vqa,shapes-pope",
            "--data", str(self.data), "--split", "test", "--limit", "40", "--batch-size", "2",
            "--max-new-tokens", "4", "--out", str(out), "--threads", "1", "--device", "cpu",
        ]  # fmt: skip

    def finished(self, out: Path) -> dict[str, Any]:
        return {name: json_lines(out / name) for name in self.files}

    def recomputed(self, out: Path, finished: dict[str, Any], log: str) -> list[str]:
        problems = []
        for name, lines in finished.items():
            after = json_lines(out / name)
            if after[: len(lines)] != lines:
                problems.append(f"{name}: finished records were rewritten")
            keys = [(r["task"], r["id"]) for r in map(json.loads, after)]
            if len(keys) != len(set(keys)):
                problems.append(f"{name}: a finished record was asked again")
        return problems

    def had_progress(self, finished: dict[str, Any]) -> bool:
        return any(finished.values())

    def result(self, out: Path) -> Any:
        results = json.loads((out / "results.json").read_text())
        records = {name: sorted(json_lines(out / name)) for name in self.files}
        return {k: results[k] for k in ("tasks", "aggregates", "controls")} | {"predictions": records}


class Study(Subject):
    def command(self, out: Path) -> list[str]:
        return [SSMVLM, "study", "--spec", str(self.work / "tiny_study.yaml"), "--out", str(out)]

    def finished(self, out: Path) -> dict[str, Any]:
        done = {}
        for marker in (out / "runs").glob("*/*/result.json"):
            cell = marker.parent
            done[str(cell.relative_to(out))] = {
                str(p.relative_to(cell)): p.stat().st_mtime_ns for p in cell.rglob("*") if p.is_file()
            }
        return done

    def recomputed(self, out: Path, finished: dict[str, Any], log: str) -> list[str]:
        problems = []
        for cell, files in finished.items():
            for name, mtime in files.items():
                path = out / cell / name
                if name.endswith(".tmp") or not path.is_file():
                    continue  # temporary files of the killed process are not outputs
                if path.stat().st_mtime_ns != mtime:
                    problems.append(f"finished cell {cell}: {name} rewritten")
        return problems

    def had_progress(self, finished: dict[str, Any]) -> bool:
        return bool(finished)

    def result(self, out: Path) -> Any:
        outputs = {}
        for cell in sorted((out / "runs").glob("*/*")):
            for name in ("model.safetensors", "backbone.safetensors"):
                if (cell / name).is_file():
                    outputs[f"{cell.parent.name}/{name}"] = weights_digest(cell / name)
            if (cell / "results.json").is_file():
                outputs[f"{cell.parent.name}/scores"] = json.loads((cell / "results.json").read_text())["tasks"]
        table = (out / "results.csv").read_text().replace(str(out), "OUT")
        return {"outputs": outputs, "results_csv": table}


# -- the trials ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    command: str
    reference_seconds: float = 0.0
    kills: int = 0
    kills_with_finished_work: int = 0  # the rest landed during start-up, before anything was kept
    kills_after_exit: int = 0
    resumes_finished: int = 0
    resumes_identical: int = 0
    nothing_recomputed: int = 0
    all_files_complete: int = 0
    leftover_tmp_files: int = 0
    failures: list[str] = field(default_factory=list)


def trial(subject: Subject, reference: Any, ref_seconds: float, index: int, rng: random.Random, tally: Tally) -> None:
    out = subject.work / f"{subject.name}-trial-{index:02d}"
    for _attempt in range(6):
        shutil.rmtree(out, ignore_errors=True)
        moment = rng.uniform(0.3, 1.0) * ref_seconds  # the first ~30% is interpreter start-up and imports
        killed = run(subject.command(out), subject.work / f"{out.name}.kill.log", kill_after=moment)
        if killed.code is None:
            break
        tally.kills_after_exit += 1  # finished before the kill landed: draw another moment
    else:
        tally.failures.append(f"trial {index}: never killed before exit")
        return
    tally.kills += 1
    finished = subject.finished(out)
    tally.kills_with_finished_work += subject.had_progress(finished)
    rerun = run(subject.command(out), subject.work / f"{out.name}.rerun.log")
    where = f"trial {index} (killed at {moment:.1f} s)"
    if rerun.code != 0:
        tally.failures.append(f"{where}: rerun exited {rerun.code}: {rerun.log.strip().splitlines()[-1:]}")
        return
    tally.resumes_finished += 1
    problems = subject.recomputed(out, finished, rerun.log)
    if problems:
        tally.failures.append(f"{where}: {'; '.join(problems)}")
    else:
        tally.nothing_recomputed += 1
    bad = unparsable_json(out)
    if bad:
        tally.failures.append(f"{where}: incomplete files after the rerun: {bad[:3]}")
    else:
        tally.all_files_complete += 1
    tally.leftover_tmp_files += sum(1 for _ in out.rglob("*.tmp"))
    if subject.result(out) == reference:
        tally.resumes_identical += 1
    else:
        tally.failures.append(f"{where}: final results differ from the uninterrupted run")
    if not tally.failures or not tally.failures[-1].startswith(where):
        shutil.rmtree(out, ignore_errors=True)  # keep the folders of failed trials for inspection


def second_study_is_refused(work: Path) -> dict[str, Any]:
    """Start a study, then a second one on the same folder while the first runs: the second must exit 2."""
    out = work / "study-two-at-once"
    shutil.rmtree(out, ignore_errors=True)
    cmd = Study("study", work, work / "data").command(out)
    with (work / "two-at-once.first.log").open("w") as handle:
        first = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        lock = out / ".ssmvlm.lock"
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.is_file() and lock.read_text().strip()):
            time.sleep(0.2)
        second = run(cmd, work / "two-at-once.second.log")
        first_code = first.wait(timeout=600)
    refused = second.code == 2 and "is in use by another ssmvlm study" in second.log
    return {"second_exit": second.code, "refused": refused, "first_exit": first_code, "message": second.log.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kills per command")
    parser.add_argument("--commands", default="train,pretrain,evaluate,study")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the tallies here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ssmvlm-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "tiny_study.yaml").write_text(TINY_STUDY)
    data = work / "data"
    if not (data / "manifest.json").is_file():
        made = run([SSMVLM, "data", "make-shapes", "--out", str(data), "--size", "40", "--image-size", "32",
                    "--seed", "0", "--difficulty", "easy", "--max-objects", "2"], work / "make-shapes.log")  # fmt: skip
        assert made.code == 0, made.log
    commands = args.commands.split(",")
    if "evaluate" in commands and "train" not in commands and not (work / "train-reference").is_dir():
        made = run(Train("train", work, data).command(work / "train-reference"), work / "train-reference.log")
        assert made.code == 0, made.log  # the run that evaluate evaluates
    rng = random.Random(args.seed)
    classes = {"train": Train, "pretrain": Pretrain, "evaluate": Evaluate, "study": Study}
    tallies = []
    for name in commands:
        subject = classes[name](name, work, data)
        reference_dir = work / f"{name}-reference"
        shutil.rmtree(reference_dir, ignore_errors=True)  # the reference is timed from an empty folder
        ref = run(subject.command(reference_dir), work / f"{name}-reference.log")
        assert ref.code == 0, ref.log
        reference = subject.result(reference_dir)
        tally = Tally(name, reference_seconds=round(ref.seconds, 1))
        for index in range(args.kills):
            trial(subject, reference, ref.seconds, index, rng, tally)
            print(f"{name} trial {index}: kills {tally.kills}, identical {tally.resumes_identical}, "
                  f"failures {len(tally.failures)}", flush=True)  # fmt: skip
        tallies.append(tally)
    refusal = second_study_is_refused(work) if "study" in commands else None
    summary = {"work": str(work), "kills_per_command": args.kills, "tallies": [vars(t) for t in tallies],
               "second_study": refusal}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
