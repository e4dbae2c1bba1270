"""Where cells run: in this process, one worker process per GPU, or as Slurm jobs through submitit.

Every launcher ships the same picklable call, ``cell_function(cell, out, device, threads)`` (by default
:func:`ssmvlm.study.cells.execute_cell`), and hands back a handle with ``done()`` and ``result()``
(a ``concurrent.futures.Future`` or a submitit ``Job``), so the scheduler treats them alike.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ssmvlm.study.cells import execute_cell
from ssmvlm.study.matrix import Cell
from ssmvlm.study.spec import SlurmSpec

CellFunction = Callable[[Cell, str, str, "int | None"], dict[str, Any]]


class Handle(Protocol):
    def done(self) -> bool: ...

    def result(self) -> Any: ...


class Launcher(Protocol):
    capacity: int

    def submit(self, cell: Cell) -> Handle: ...

    def close(self) -> None: ...


class InProcessLauncher:
    """Runs each cell here, synchronously (CPU or one GPU); the handle it returns is already done."""

    capacity = 1

    def __init__(
        self, out: Path, device: str, threads: int | None = None, cell_function: CellFunction | None = None
    ) -> None:
        self.out, self.device, self.threads = str(out), device, threads
        self.cell_function = cell_function or execute_cell

    def submit(self, cell: Cell) -> Handle:
        future: Future = Future()
        try:
            future.set_result(self.cell_function(cell, self.out, self.device, self.threads))
        except BaseException as exc:  # surfaced by result(), like a worker's failure
            future.set_exception(exc)
        return future

    def close(self) -> None:
        return None


def _claim_gpu(gpu_ids: Any) -> None:
    # Runs first in each spawned worker, before anything initializes CUDA: the worker sees one GPU only.
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())


class GpuPoolLauncher:
    """Spawned worker processes, ``workers_per_gpu`` per GPU, each pinned with ``CUDA_VISIBLE_DEVICES``."""

    def __init__(
        self,
        out: Path,
        gpus: int,
        threads: int | None = None,
        cell_function: CellFunction | None = None,
        device: str = "cuda",
        workers_per_gpu: int = 1,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        gpu_ids = context.Queue()
        for _ in range(workers_per_gpu):
            for gpu in range(gpus):
                gpu_ids.put(gpu)
        self.capacity = gpus * workers_per_gpu
        self.out, self.threads, self.device = str(out), threads, device
        self.cell_function = cell_function or execute_cell
        self.pool = ProcessPoolExecutor(
            max_workers=self.capacity, mp_context=context, initializer=_claim_gpu, initargs=(gpu_ids,)
        )

    def submit(self, cell: Cell) -> Handle:
        return self.pool.submit(self.cell_function, cell, self.out, self.device, self.threads)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class CpuPoolLauncher:
    """Spawned CPU worker processes: on a small machine two one-thread workers get more done than one worker
    with two threads, whose nano-sized ops leave the second thread mostly waiting."""

    def __init__(self, out: Path, workers: int, threads: int | None = None, cell_function: CellFunction | None = None):
        self.capacity = workers
        self.out, self.threads = str(out), threads
        self.cell_function = cell_function or execute_cell
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, cell: Cell) -> Handle:
        return self.pool.submit(self.cell_function, cell, self.out, "cpu", self.threads)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class SubmititLauncher:
    """Slurm jobs through submitit (``cluster="local"`` or ``"debug"`` run them here, for tests)."""

    def __init__(
        self,
        out: Path,
        slurm: SlurmSpec,
        *,
        device: str = "auto",
        threads: int | None = None,
        cluster: str | None = None,
        cell_function: CellFunction | None = None,
    ) -> None:
        import submitit

        self.executor = submitit.AutoExecutor(folder=Path(out) / "submitit" / "%j", cluster=cluster)
        parameters: dict[str, Any] = {"timeout_min": slurm.timeout_min}
        if self.executor.cluster == "slurm":
            parameters.update(
                slurm_partition=slurm.partition,
                gpus_per_node=slurm.gpus_per_node,
                cpus_per_task=slurm.cpus_per_task,
                mem_gb=slurm.mem_gb,
                **slurm.extra,
            )
        self.executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        self.capacity = slurm.max_parallel
        self.out, self.device, self.threads = str(out), device, threads
        self.cell_function = cell_function or execute_cell

    def submit(self, cell: Cell) -> Handle:
        return self.executor.submit(self.cell_function, cell, self.out, self.device, self.threads)

    def close(self) -> None:
        return None


def make_launcher(
    kind: str,
    out: Path,
    *,
    device: str,
    gpus: int,
    threads: int | None,
    slurm: SlurmSpec,
    cell_function: CellFunction | None = None,
    workers_per_gpu: int = 1,
    cpu_workers: int = 1,
) -> Launcher:
    """The launcher for ``execution``: submitit, a GPU pool for several GPU workers, a CPU pool for several CPU
    workers (``device: cpu``), else in-process."""
    if kind == "submitit":
        return SubmititLauncher(out, slurm, device=device, threads=threads, cell_function=cell_function)
    if gpus * workers_per_gpu > 1:
        return GpuPoolLauncher(out, gpus, threads, cell_function, workers_per_gpu=workers_per_gpu)
    if device == "cpu" and cpu_workers > 1:
        return CpuPoolLauncher(out, cpu_workers, threads, cell_function)
    return InProcessLauncher(out, device, threads, cell_function)
