"""`ssmvlm pretrain`: Matched backbone initialization: classification pretraining and dense adaptation."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Matched backbone initialization: classification pretraining and dense adaptation.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    backbone: str = typer.Option(..., "--backbone", help="Zoo backbone name, e.g. vmamba_nano."),
    objective: str = typer.Option("classification", "--objective", help="classification | detection | segmentation."),
    out: Path = typer.Option(..., "--out", help="Output directory (resumed if it holds an unfinished run)."),
    data: Path | None = typer.Option(None, "--data", help="A ShapeScenes directory."),
    imagefolder: Path | None = typer.Option(
        None, "--imagefolder", help="ImageFolder root (CLASS/IMG or train/, val/)."
    ),
    coco: Path | None = typer.Option(None, "--coco", help="COCO instances JSON for training."),
    coco_val: Path | None = typer.Option(None, "--coco-val", help="COCO instances JSON held out for mAP."),
    images: Path | None = typer.Option(None, "--images", help="Image folder the COCO file names are relative to."),
    ade20k: Path | None = typer.Option(None, "--ade20k", help="ADE20K root (images/, annotations/)."),
    images_seen: int | None = typer.Option(None, "--images-seen", help="Training budget in images."),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Frame side (default 96; dense: 2x the init's side)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    init: str | None = typer.Option(None, "--init", help="Checkpoint file or initialization name (NAME@TAG)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    config_file: Path | None = typer.Option(None, "--config", help="YAML file with PretrainConfig fields."),
    override: list[str] = typer.Option([], "--set", help="Config override key.path=value (repeatable)."),
    register: str | None = typer.Option(None, "--register", help="Register the result as BACKBONE@TAG."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch (default: one per core); recorded in run.json."
    ),
) -> None:
    """Pretrain or adapt one backbone with the matched recipe; prints its held-out metrics."""
    from ssmvlm.utils.threads import set_threads

    set_threads(threads)
    from ssmvlm.config import load_config
    from ssmvlm.pretrain import PretrainConfig, run_pretraining
    from ssmvlm.utils.errors import ConfigError
    from ssmvlm.utils.progress import console

    sources = {"shapes": data, "imagefolder": imagefolder, "coco": coco, "ade20k": ade20k}
    given = [name for name, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ConfigError(
            "data",
            "give exactly one of --data, --imagefolder, --coco, --ade20k",
            allowed=["--data", "--imagefolder", "--coco", "--ade20k"],
        )
    source = given[0]
    base: dict = {
        "backbone": backbone,
        "objective": objective,
        "seed": seed,
        "device": device,
        "init": init,
        "data": {"source": source},
    }
    if source == "coco":
        base["data"].update(
            annotations=str(coco),
            val_annotations=str(coco_val) if coco_val else None,
            root=str(images) if images else None,
        )
    else:
        base["data"]["root"] = str(sources[source])
    for key, value in (("images_seen", images_seen), ("image_size", image_size), ("batch_size", batch_size)):
        if value is not None:
            base[key] = value
    config = load_config(PretrainConfig, config_file, override, base=base)
    metrics = run_pretraining(config, out, register_as=register)
    primary = metrics["primary_metric"]
    console.print(
        f"{metrics['backbone']} {metrics['objective']}: {primary} {metrics[primary]:.4f} "
        f"({metrics['images_seen']} images, {metrics['train_seconds']:.1f} s, "
        f"{metrics['images_per_second']:.0f} images/s) → {out}" + (f", registered as {register}" if register else ""),
        highlight=False,
    )


@app.command("list")
def list_(
    home: Path | None = typer.Option(None, "--home", help="Registry home (default $SSMVLM_HOME or ~/.cache/ssmvlm)."),
) -> None:
    """List the registered initializations with their held-out metrics."""
    from rich.console import Console
    from rich.table import Table

    from ssmvlm.backbones.initializations import list_initializations, registry_dir

    entries = list_initializations(home=home)
    if not entries:
        typer.echo(f"no initializations registered in {registry_dir(home)}")
        return
    table = Table()
    table.add_column("name", no_wrap=True)
    for column in ("objective", "metric", "images seen", "image size"):
        table.add_column(column)
    table.add_column("weights", overflow="fold")
    for entry in entries:
        metrics = entry.get("metrics", {})
        primary = metrics.get("primary_metric", "")
        value = metrics.get(primary)
        table.add_row(
            entry["name"],
            str(entry.get("objective")),
            f"{primary} {value:.4f}" if isinstance(value, int | float) else "-",
            str(metrics.get("images_seen", "-")),
            str(metrics.get("image_size", "-")),
            entry["weights"],
        )
    console = Console()
    Console(width=200).print(table) if not console.is_terminal else console.print(table)
