"""The run folder both training loops share: the config drift check, checkpoint swaps, the log cut on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssmvlm.utils.errors import CheckpointError, ConfigError
from ssmvlm.utils.io import atomic_write_json
from ssmvlm.utils.run_folder import (
    check_same_config,
    read_checkpoint,
    settle_checkpoint,
    swap_folders,
    truncate_log,
    write_checkpoint,
)


def test_drift_check_names_the_first_dotted_key_and_ignores_what_may_change(tmp_path: Path) -> None:
    saved = {"model": {"backbone": "vit_nano", "connector": "linear"}, "logging": {"log_every": 10}, "seed": 1}
    check_same_config(tmp_path, saved, may_change=())  # no saved config yet
    atomic_write_json(tmp_path / "config.json", saved)
    check_same_config(tmp_path, {**saved, "logging": {"log_every": 1}}, may_change=("logging",))
    with pytest.raises(ConfigError, match=r"^model\.connector: .* model\.connector='linear', not 'gelu-mlp'"):
        check_same_config(
            tmp_path, {**saved, "model": {"backbone": "vit_nano", "connector": "gelu-mlp"}}, may_change=("logging",)
        )
    with pytest.raises(ConfigError, match=r"^logging\.log_every: "):  # a group is matched whole, not by prefix text
        check_same_config(tmp_path, {**saved, "logging": {"log_every": 1}}, may_change=("log",))


def test_checkpoint_replaces_the_previous_one_and_reads_back(tmp_path: Path) -> None:
    folder = tmp_path / "step-00000001"
    write_checkpoint(folder, {"a.bin": b"first"}, {"step": 1})
    write_checkpoint(folder, {"a.bin": b"second"}, {"step": 1, "again": True})
    assert (folder / "a.bin").read_bytes() == b"second" and not any(p.exists() for p in swap_folders(folder))
    assert read_checkpoint(folder, lambda f: json.loads((f / "state.json").read_text()))["again"] is True
    with pytest.raises(CheckpointError, match=r"step-00000001: cannot resume from this checkpoint \(.*missing"):
        read_checkpoint(folder, lambda f: (f / "missing").read_bytes())


def test_settle_keeps_one_complete_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    staged, old = swap_folders(folder)
    assert not settle_checkpoint(folder)
    write_checkpoint(folder, {}, {"step": 1})
    folder.rename(old)  # killed after parking the previous checkpoint, before the next one was complete
    staged.mkdir()
    assert settle_checkpoint(folder) and json.loads((folder / "state.json").read_text())["step"] == 1
    assert not staged.exists() and not old.exists()


def test_truncate_log_drops_later_steps_and_a_torn_line(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)) + '{"step": 4')
    truncate_log(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    truncate_log(tmp_path / "absent.jsonl", 2)
