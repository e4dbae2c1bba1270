"""`ssmvlm zoo list|info` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmvlm.cli import app
from ssmvlm.utils.errors import ConfigError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "ssmvlm" / "zoo_rows.json"


def test_list_shows_the_family_table() -> None:
    result = runner.invoke(app, ["zoo", "list", "--family", "vit"])
    assert result.exit_code == 0, result.output
    for expected in ("vit_nano", "vit_small_patch16", "vit_base_patch16", "22.05M", "86.57M", "2.82M",
                     "b-2", "196 @224²", "36 @96²", "in1k"):
        assert expected in result.output
    assert "deit_small_patch16" not in result.output and "swin_nano" not in result.output


def test_list_at_one_size_marks_sizes_a_backbone_cannot_take() -> None:
    result = runner.invoke(app, ["zoo", "list", "--family", "convnext", "--image-size", "224"])
    assert result.exit_code == 0, result.output
    assert result.output.count("196 @224²") == 2
    result = runner.invoke(app, ["zoo", "list", "--family", "maxvit", "--image-size", "100"])
    assert result.exit_code == 0, result.output
    assert "@100²" not in result.output and result.output.count("—") >= 2


def test_list_reuses_cached_rows_while_the_code_is_unchanged(_private_cache: Path) -> None:
    assert runner.invoke(app, ["zoo", "list", "--family", "swin"]).exit_code == 0
    cache = json.loads(_private_cache.read_text())
    cache["rows"]["swin_nano@default"]["params"] = "cached-value"
    _private_cache.write_text(json.dumps(cache))
    assert "cached-value" in runner.invoke(app, ["zoo", "list", "--family", "swin"]).output
    cache["fingerprint"] = "stale"
    _private_cache.write_text(json.dumps(cache))
    assert "cached-value" not in runner.invoke(app, ["zoo", "list", "--family", "swin"]).output


def test_info_details() -> None:
    result = runner.invoke(app, ["zoo", "info", "vit_nano", "--image-size", "224"])
    assert result.exit_code == 0, result.output
    for expected in ("2,855,232", "b-2: dim 192, stride 16", "196 × 192", "224² (default 96²)"):
        assert expected in result.output
    result = runner.invoke(app, ["zoo", "info", "vitdet_base"])
    assert result.exit_code == 0, result.output
    for expected in ("85,889,024", "4096 × 768", "model_final_61ccd1.pkl"):
        assert expected in result.output
    result = runner.invoke(app, ["zoo", "info", "swin_tiny_patch4_window7"])
    assert "96, 192, 384, 768" in result.output and "swin_tiny_patch4_window7_224.pth" in result.output


def test_unknown_names_and_bad_sizes_are_user_errors() -> None:
    result = runner.invoke(app, ["zoo", "info", "no_such_backbone"])
    assert isinstance(result.exception, ConfigError) and "unknown backbone" in str(result.exception)
    result = runner.invoke(app, ["zoo", "info", "maxvit_nano", "--image-size", "100"])
    assert isinstance(result.exception, ConfigError) and "multiples of 32" in str(result.exception)
    result = runner.invoke(app, ["zoo", "list", "--family", "no_such_family"])
    assert isinstance(result.exception, ConfigError) and "vit" in str(result.exception)
