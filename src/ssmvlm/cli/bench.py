"""`ssmvlm bench`: measure encoder and VLM cost."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Measure encoder and VLM cost.", no_args_is_help=True)


def _split(values: list[str]) -> list[str]:
    """Accept ``--x a --x b``, ``--x a,b`` and ``--x "a b"`` alike."""
    return [item for value in values for item in value.replace(",", " ").split()]


@app.command("encoders")
def encoders(
    backbones: list[str] = typer.Option(
        ["vmamba_nano", "vit_nano"], "--backbones", "-b", help="Zoo names (repeat, or comma/space separated)."
    ),
    resolutions: list[str] = typer.Option(
        ["224", "448"], "--resolutions", "-r", help="Square input sides (repeat, or comma/space separated)."
    ),
    batch_size: int = typer.Option(64, help="Largest batch tried for throughput (halved on OOM)."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32."),
    device: str = typer.Option("auto", help="cuda, cpu or auto."),
    warmup: int = typer.Option(3, help="Untimed calls before timing."),
    repeats: int = typer.Option(10, help="Timed calls; the median is reported."),
    no_throughput: bool = typer.Option(False, "--no-throughput", help="Only batch-1 latency."),
    no_flops: bool = typer.Option(False, "--no-flops", help="Skip FLOP counting."),
    fit_min_tokens: int = typer.Option(16384, help="Fit the scaling exponent on points with ≥ this many tokens."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile every backbone before timing."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="Time replays of a captured CUDA graph (GPU)."),
    out: Path = typer.Option(Path("runs/bench"), help="Output folder (JSON, Markdown, plot)."),
) -> None:
    """Throughput, batch-1 latency, peak memory, tokens and FLOPs of encoders against resolution."""
    from ssmvlm.bench.encoders import EncoderBenchConfig, markdown_table, run_encoder_bench, scaling_exponents
    from ssmvlm.config import from_dict

    config = from_dict(
        EncoderBenchConfig,
        {
            "backbones": _split(backbones),
            "resolutions": _split(resolutions),
            "batch_size": batch_size,
            "dtype": dtype,
            "device": device,
            "warmup": warmup,
            "repeats": repeats,
            "measure_throughput": not no_throughput,
            "measure_flops": not no_flops,
            "fit_min_tokens": fit_min_tokens,
            "compile": compile_model,
            "cuda_graph": cuda_graph,
        },
    )
    rows = run_encoder_bench(config, out)
    typer.echo(markdown_table(rows, scaling_exponents(rows, config.fit_min_tokens)))
    typer.echo(f"wrote {out}/encoders.json, encoders.md, encoders.png")


@app.command("vlm")
def vlm(
    runs: list[Path] = typer.Option(..., "--run", help="Trained run directories (repeat for several encoders)."),
    resolutions: list[str] = typer.Option(
        ["96", "192"], "--resolutions", "-r", help="Square input sides (repeat, or comma/space separated)."
    ),
    batch_size: int = typer.Option(1, help="Images per generate call."),
    new_tokens: int = typer.Option(32, help="Greedy tokens decoded with the KV cache."),
    device: str = typer.Option("auto", help="cuda, cpu or auto."),
    repeats: int = typer.Option(5, help="Timed calls; the median is reported."),
    out: Path = typer.Option(Path("runs/bench_vlm"), help="Output folder (JSON, Markdown)."),
) -> None:
    """Encoder, prefill and decode latency of trained VLMs as the visual token count grows."""
    from ssmvlm.bench.vlm import VLMBenchConfig, markdown_table, run_vlm_bench
    from ssmvlm.config import from_dict

    config = from_dict(
        VLMBenchConfig,
        {
            "runs": [str(r) for r in runs],
            "resolutions": _split(resolutions),
            "batch_size": batch_size,
            "new_tokens": new_tokens,
            "device": device,
            "repeats": repeats,
        },
    )
    typer.echo(markdown_table(run_vlm_bench(config, out)))
