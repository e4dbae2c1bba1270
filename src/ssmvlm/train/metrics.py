"""Where training metrics go: ``metrics.jsonl`` always, the console on log steps, TensorBoard / W&B when asked
for and importable."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ssmvlm.utils.io import append_jsonl
from ssmvlm.utils.progress import console
from ssmvlm.utils.run_folder import truncate_log

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    def __init__(self, run_dir: Path, loggers: list[str], config: dict[str, Any], *, enabled: bool) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self.tensorboard: Any = None
        self.wandb: Any = None
        if not enabled:
            return
        if "tensorboard" in loggers and importable("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if "wandb" in loggers and importable("wandb"):
            import wandb

            self.wandb = wandb.init(dir=str(run_dir), config=config, name=Path(run_dir).name, resume="allow")
        for name in set(loggers) - {"tensorboard", "wandb"}:
            console.print(f"[yellow]warning:[/yellow] unknown logger {name!r} ignored", highlight=False)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint (they will be logged again)."""
        if self.enabled:
            truncate_log(self.path, step)

    def log(self, record: dict[str, Any], *, echo: bool) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        step = record["step"]
        scalars = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=step)
        if echo:
            console.print(
                f"step {step:>6}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                f"grad-norm {record['grad_norm']:.3f}  {record['tokens_per_s']:,.0f} tok/s",
                highlight=False,
            )

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
