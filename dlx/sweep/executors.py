"""Where a sweep's cells train: an executor runs one cell per slot and says when the process running it died.

``LocalPool`` (worker processes on this machine, dlx.sweep.pool) and ``RayExecutor`` (tasks on a Ray
cluster, dlx.sweep.ray_executor) have this one face; the runner (dlx.sweep.runner) schedules cells onto
slots, keeps sweep.json and the display, and records what the executor reports. A third executor
(e.g. SLURM through submitit) is one more class with these methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from dlx.sweep.pool import Plan, WorkerDied, WorkerProcess
from dlx.sweep.spec import Sweep


class Executor(Protocol):
    workers: int  # cells in training at once (the display's ETA divides the work left by it)
    gpus: list[str]  # GPUs the sweep hands out itself (GpuPool); [] when the engine assigns them (Ray)
    claims: bool  # True: the sweep process holds each cell's lock while the cell trains elsewhere

    def describe(self, sweep: Sweep | None = None) -> str: ...

    def prepare(self, slot: int) -> None:
        """Get the slot ready to take a cell (start its worker); may raise WorkerDied."""

    def call(self, slot: int, task: dict[str, Any]) -> dict[str, Any]:
        """Train one cell (``dlx.sweep.worker.run_cell``'s task and reply); WorkerDied if its process died."""
        ...

    def interrupt(self, slot: int) -> None:
        """Ask the cell in training on this slot to stop: it is saved as interrupted."""

    def close(self, slot: int | None = None, timeout: float = 30) -> None:
        """Release one slot's resources, or all of them."""


class LocalPool:
    """Worker processes on this machine, one per slot (``python -m dlx.sweep.worker``), started on first use."""

    claims = False

    def __init__(self, plan: Plan, log_dir: Path) -> None:
        self.plan = plan
        self.workers = plan.workers
        self.gpus = plan.gpus
        self.log_dir = log_dir
        self._procs: list[WorkerProcess | None] = [None] * plan.workers

    def describe(self, sweep: Sweep | None = None) -> str:
        return self.plan.describe(sweep)

    def prepare(self, slot: int) -> None:
        if self._procs[slot] is None:
            self._procs[slot] = WorkerProcess(self.plan.env(slot), self.log_dir / f"worker-{slot}.log")
        proc = self._procs[slot]
        assert proc is not None
        proc.wait_ready()

    def call(self, slot: int, task: dict[str, Any]) -> dict[str, Any]:
        proc = self._procs[slot]
        assert proc is not None
        try:
            return proc.call(task)
        except WorkerDied:
            self._procs[slot] = None
            proc.close(timeout=5)
            raise

    def interrupt(self, slot: int) -> None:
        proc = self._procs[slot]
        if proc is not None:
            proc.interrupt()

    def close(self, slot: int | None = None, timeout: float = 30) -> None:
        for i in range(self.workers) if slot is None else [slot]:
            proc = self._procs[i]
            if proc is not None:
                proc.close(timeout=timeout)
                self._procs[i] = None
