"""The bench harness on CPU at small sizes: encoder rows, FLOPs with the scan formula, fits, VLM phases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_data import make_mini_llava

from ssmvlm.bench.encoders import EncoderBenchConfig, EncoderMeasurement, run_encoder_bench, scaling_exponents
from ssmvlm.bench.vlm import VLMBenchConfig, run_vlm_bench
from ssmvlm.config import load_config
from ssmvlm.ops.flops import count_scan_flops, selective_scan_flops
from ssmvlm.train import TrainConfig, train_vlm


def test_scan_flop_formula_and_meta_counting() -> None:
    import torch

    from ssmvlm.ops import selective_scan

    assert selective_scan_flops(2, 8, 16, 4, with_d=True, with_z=False) == 9 * 2 * 16 * 8 * 4 + 2 * 8 * 16
    u = torch.empty(2, 8, 16, device="meta")
    A = torch.empty(8, 4, device="meta")
    B = torch.empty(2, 4, 16, device="meta")
    with count_scan_flops() as tally:
        out = selective_scan(u, u, A, B, B, D=torch.empty(8, device="meta"), z=u)
    assert out.shape == u.shape and tally.calls == 1
    assert tally.flops == selective_scan_flops(2, 8, 16, 4, with_d=True, with_z=True)


def test_encoder_bench_rows_flops_and_outputs(tmp_path: Path) -> None:
    config = EncoderBenchConfig(
        backbones=["vit_nano", "vmamba_nano"], resolutions=[64, 96], batch_size=2, warmup=1, repeats=1
    )
    rows = run_encoder_bench(config, tmp_path)
    assert [(r.backbone, r.resolution, r.tokens) for r in rows] == [
        ("vit_nano", 64, 16),
        ("vit_nano", 96, 36),
        ("vmamba_nano", 64, 16),
        ("vmamba_nano", 96, 36),
    ]
    assert all(r.status == "ok" and r.latency_ms > 0 and r.throughput_img_s > 0 for r in rows)
    vit, vmamba = rows[1], rows[3]
    assert vit.scan_gflops == 0 and vmamba.scan_gflops > 0
    assert vit.gflops > rows[0].gflops  # more tokens, more work
    saved = json.loads((tmp_path / "encoders.json").read_text())
    assert len(saved["rows"]) == 4 and set(saved["exponents"]) == {"vit_nano", "vmamba_nano"}
    assert saved["mode"] == "eager"
    assert (tmp_path / "encoders.png").stat().st_size > 0 and "| vmamba_nano |" in (
        tmp_path / "encoders.md"
    ).read_text()


def test_encoder_bench_refuses_cuda_graphs_without_cuda(tmp_path: Path) -> None:
    config = EncoderBenchConfig(backbones=["vit_nano"], resolutions=[64], device="cpu", cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        run_encoder_bench(config, tmp_path)


def test_scaling_exponent_fit_uses_the_high_token_range() -> None:
    rows = [
        EncoderMeasurement("a", "f", "k", 1, r, t, latency_ms=lat)
        for r, t, lat in [(1, 100, 5.0), (2, 1000, 10.0), (3, 10000, 100.0), (4, 100000, 1000.0)]
    ]
    rows += [EncoderMeasurement("b", "f", "k", 1, r, t, latency_ms=t**2 / 1e6) for r, t in [(1, 1000), (2, 10000)]]
    rows.append(EncoderMeasurement("b", "f", "k", 1, 3, 100000, status="oom"))
    exponents = scaling_exponents(rows, fit_min_tokens=10000)
    assert exponents["a"] == pytest.approx(1.0)
    assert exponents["b"] == pytest.approx(2.0)  # OOM rows are left out of the fit


def test_vlm_bench_times_each_phase(tmp_path: Path) -> None:
    data = make_mini_llava(tmp_path / "data", 8, size=48)
    config = load_config(
        TrainConfig,
        None,
        [
            "model.backbone=vit_nano",
            "model.image_size=48",
            "recipe=shapes",
            "optim.global_batch_size=4",
            "optim.per_device_batch_size=4",
            "optim.max_steps=2",
            f"data.train_json={data}",
        ],
    )
    run = train_vlm(config, tmp_path / "run", show_progress=False)
    rows = run_vlm_bench(
        VLMBenchConfig(runs=[str(run)], resolutions=[48, 96], new_tokens=3, warmup=1, repeats=1), tmp_path / "b"
    )
    assert [(r.resolution, r.visual_tokens) for r in rows] == [(48, 9), (96, 36)]
    assert rows[1].prefill_tokens - rows[0].prefill_tokens == 36 - 9
    assert all(r.encoder_ms > 0 and r.prefill_ms > 0 and r.decode_ms_per_token > 0 for r in rows)
    assert all(r.encoder_mode == "eager" for r in rows)  # CUDA graphs are for CUDA inputs
    assert (tmp_path / "b" / "vlm.md").is_file()
