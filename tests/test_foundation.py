"""Config loading, atomic I/O, safe checkpoint loading and the CLI skeleton."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssmvlm.cli import app
from ssmvlm.config import load_config, to_dict
from ssmvlm.utils.errors import CheckpointError, ConfigError, DataError
from ssmvlm.utils.io import append_jsonl, atomic_write_json, iter_jsonl, load_state_dict, read_json
from ssmvlm.utils.provenance import write_run_record


@dataclass
class _Inner:
    lr: float = 1e-3
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class _Outer:
    seed: int = 0
    inner: _Inner = field(default_factory=_Inner)
    mode: str = "x"


def test_config_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\ninner:\n  lr: 0.5\n")
    cfg = load_config(_Outer, path, ["inner.names=[b, c]", "mode=y"])
    assert cfg.seed == 3 and cfg.inner.lr == 0.5 and cfg.inner.names == ["b", "c"] and cfg.mode == "y"
    assert to_dict(cfg)["inner"]["names"] == ["b", "c"]


def test_config_unknown_key_names_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"inner\.lrr: unknown key.*allowed: lr, names"):
        load_config(_Outer, None, ["inner.lrr=1"])
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        load_config(_Outer, None, ["seed=1.5"])


def test_atomic_json_and_jsonl_resume(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert not list(tmp_path.glob(".*tmp"))
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"i": 0})
    append_jsonl(log, {"i": 1})
    with log.open("a") as handle:
        handle.write('{"i": 2')  # a crash mid-write
    assert [r["i"] for r in iter_jsonl(log, tolerate_truncated_tail=True)] == [0, 1]
    with pytest.raises(DataError, match="record 3"):
        list(iter_jsonl(log))


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON at line 1"):
        read_json(bad)
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataError, match="not UTF-8"):
        read_json(bad)


def test_load_state_dict_unwraps_and_refuses_pickles(tmp_path: Path) -> None:
    weights = {"w": torch.randn(2, 2)}
    torch.save({"model": weights, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = load_state_dict(tmp_path / "ckpt.pth")
    assert torch.equal(loaded["w"], weights["w"])
    torch.save({"model": weights, "args": _Outer()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="convert_checkpoint"):
        load_state_dict(tmp_path / "pickled.pth")


def test_run_record_has_versions_and_seed(tmp_path: Path) -> None:
    path = write_run_record(tmp_path, {"a": 1}, seed=7)
    record = json.loads(path.read_text())
    assert record["seed"] == 7 and record["config"] == {"a": 1}
    assert record["versions"]["torch"] == torch.__version__.split("+")[0] or record["versions"]["torch"]


def test_cli_help_for_every_group() -> None:
    runner = CliRunner()
    for group in ("data", "zoo", "pretrain", "train", "evaluate", "chat", "study", "bench"):
        result = runner.invoke(app, [group, "--help"])
        assert result.exit_code == 0, result.output
