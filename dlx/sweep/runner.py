"""Running a sweep: hand cells to worker processes and keep sweep.json current; ``run_sweep`` and ``show_plan``."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from dlx.console import wide_console
from dlx.errors import DlxError
from dlx.runs import Run, claim_cell, update_sweep_index
from dlx.sweep.checks import RETRIED, check_existing, held_elsewhere, inspect_cells, read_summary
from dlx.sweep.display import Display
from dlx.sweep.executors import Executor, LocalPool

if TYPE_CHECKING:
    from dlx.sweep.ray_executor import RayOptions
from dlx.sweep.pool import GpuPool, WorkerDied, gpus_needed, plan_workers
from dlx.sweep.spec import Sweep, format_value
from dlx.sweep.state import FINAL, CellState

BUSY_RETRY_S = 2.0  # how often a cell held by another sweep process is looked at again


class Scheduler:
    """Hands out cells; a cell held by another process comes back after a pause until it can be decided."""

    def __init__(self, states: list[CellState]) -> None:
        self._cond = threading.Condition()
        self._ready = deque(states)
        self._later: list[tuple[float, CellState]] = []
        self.stopping = False

    def next(self) -> CellState | None:
        with self._cond:
            while not self.stopping:
                now = time.monotonic()
                due = [item for item in self._later if item[0] <= now]
                self._later = [item for item in self._later if item[0] > now]
                self._ready.extend(state for _, state in due)
                if self._ready:
                    return self._ready.popleft()
                if not self._later:
                    return None
                self._cond.wait(timeout=min(t for t, _ in self._later) - now)
            return None

    def later(self, state: CellState, delay: float) -> None:
        with self._cond:
            self._later.append((time.monotonic() + delay, state))
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()


def record_worker_death(run_dir: Path, message: str, held: Run | None = None, status: str = "failed") -> str | None:
    """Mark a cell failed on disk when its worker died with it (SIGKILL, out of memory): the worker could not.

    Only a cell still ``running`` whose lock is free (the OS released the dead worker's) is touched,
    keeping every field of its summary: a final status the worker wrote before it died stays, and a
    cell another process holds now is that process's. Returns the cell's status on disk afterwards.
    ``held``: this process holds the cell's lock (an executor that claims cells in the sweep process);
    ``status``: what a cell left ``running`` becomes (``interrupted`` for a task cancelled by Ctrl-C).
    """
    run = held or Run(run_dir)
    if not run.path.is_dir():
        return None  # the worker died before it claimed the cell
    if held is None and not run.try_acquire():
        return read_summary(run.path).get("status")
    try:
        try:
            summary = run.read_summary()
        except DlxError:
            return None
        if not summary and held is not None:  # it died before its first write; this process says it
            summary = {"status": "running", "name": run.path.parent.name, "run_id": run.path.name,
                       "run_dir": str(run.path)}  # fmt: skip
        if summary.get("status") != "running":
            return summary.get("status")
        ended_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        run.write_summary({**summary, "status": status, "message": message, "ended_at": ended_at})
        return status
    finally:
        if held is None:
            run.release()


class SweepRunner:
    def __init__(self, sweep: Sweep, executor: Executor, *, retry_failed: bool, console: Console) -> None:
        self.sweep = sweep
        self.executor = executor
        self.retry_failed = retry_failed
        self.states = [CellState(cell) for cell in sweep.cells]
        self.lock = threading.Lock()  # the cell states, read by the display
        self.finishing = threading.Lock()  # one cell at a time: its state, sweep.json, its line
        self.display = Display(sweep.name, executor, console, self.states, self.lock)
        self.scheduler: Scheduler | None = None
        self.busy = [False] * executor.workers
        self.gpu_pool = GpuPool(executor.gpus)
        self.interrupted = False
        self.index: dict[str, Any] = {}

    # --- the index
    def write_index(self) -> dict[str, Any]:
        sweep = self.sweep

        def build() -> dict[str, Any]:
            cells = []
            for cell in sweep.cells:
                s = read_summary(cell.run_dir)
                cells.append({
                    "name": cell.name,
                    "values": cell.values,
                    "run_dir": str(cell.run_dir),
                    "status": s.get("status", "pending"),
                    # A run's own figures win: they count the model as trained (e.g. a replaced head).
                    "parameters": s.get("parameters", cell.parameters),
                    "flops_per_image": s.get("flops_per_image", cell.flops_per_image),
                    "epochs": cell.config.train.epochs,
                    "epochs_completed": s.get("epochs_completed", 0),
                    "best_val_acc": s.get("best_val_acc"),
                    "test_acc": s.get("test_acc"),
                    "wall_seconds": s.get("wall_seconds"),
                    "diagnosis": (s.get("diagnosis") or {}).get("verdict"),
                    "message": s.get("message", ""),
                })  # fmt: skip
            spec = sweep.spec.model_dump(mode="json", exclude_none=True)
            return {
                "name": sweep.name,
                "sweep_file": str(sweep.file),
                "base": str(sweep.base),
                **{k: spec[k] for k in ("set", "grid", "variants", "random", "seeds") if k in spec},
                "runs_dir": str(sweep.runs_dir),
                "import_path": os.getcwd(),  # where workers look for class_path modules (DLX_IMPORT_PATH)
                "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "counts": dict(Counter(c["status"] for c in cells)),
                "cells": cells,
            }

        return update_sweep_index(sweep.folder, build)

    # --- what happened to a cell
    def _finish(self, st: CellState, reply: dict[str, Any]) -> None:
        # Serialized: a line's [done/total] counts the cells decided so far, so two cells that end together
        # must not both be counted before either line is printed (the same number twice, one skipped).
        with self.finishing:
            if self._decide(st, reply):
                self.write_index()
                self.display.cell_line(st)

    def _decide(self, st: CellState, reply: dict[str, Any]) -> bool:
        """Set the cell's state from a worker's reply; False when another process holds the cell."""
        outcome, status = reply.get("outcome"), reply.get("status")
        with self.lock:
            st.ended = time.monotonic()
            st.summary = read_summary(st.cell.run_dir)
            if outcome == "busy":
                st.state, st.note, st.was_elsewhere = "elsewhere", "running in another process", True
                return False
            st.state = status if status in FINAL else "failed"
            message = reply.get("message") or ""
            if outcome == "skipped":
                if status == "completed":
                    st.note = "completed by another process" if st.was_elsewhere else "completed earlier"
                else:
                    st.note = f"{status} earlier, not retried (--retry-failed retries it)"
            else:
                st.trained_here = True
                st.from_epoch = int(reply.get("from_epoch") or 0)
                verb = f"resumed from epoch {st.from_epoch}" if outcome == "resumed" else "trained"
                if status == "interrupted" and not reply.get("died"):
                    message = "re-run the sweep to resume it"
                st.note = verb if status == "completed" else f"{verb}; {message}"
        return True

    # --- worker slots
    def _slot(self, index: int) -> None:
        assert self.scheduler is not None
        executor = self.executor
        while (st := self.scheduler.next()) is not None:
            if st.state == "elsewhere" and held_elsewhere(st.cell.run_dir):
                self.scheduler.later(st, BUSY_RETRY_S)  # still in training there: look again later
                continue
            with contextlib.suppress(WorkerDied):  # call() below reports it for this cell
                executor.prepare(index)
            if self.scheduler.stopping:
                break  # Ctrl-C while the worker was starting: the cell stays pending
            claim = claim_cell(st.cell.run_dir) if executor.claims else None
            if executor.claims and claim is None:  # trained by another sweep process right now
                self._finish(st, {"outcome": "busy", "status": None, "message": "held by another dlx process"})
                self.scheduler.later(st, BUSY_RETRY_S)
                continue
            try:
                self._train(index, st, claim)
            finally:
                if claim is not None:
                    claim.release()
        executor.close(index)

    def _train(self, index: int, st: CellState, claim: Run | None) -> None:
        """Hand one cell to the executor's slot ``index`` and record what became of it."""
        assert self.scheduler is not None
        executor, gpus = self.executor, self.executor.gpus
        need = gpus_needed(st.cell.config, gpus)
        held = self.gpu_pool.take(need, gpus[index % len(gpus)]) if need else []
        if held is None:
            return  # Ctrl-C while waiting for GPUs: the cell stays pending
        with self.lock:
            st.state, st.started, st.worker = "running", time.monotonic(), index
            self.busy[index] = True
        task = {"cell": st.cell.name, "run_dir": str(st.cell.run_dir), "config": st.cell.config.to_dict(),
                "experiment_file": str(self.sweep.base), "retry_failed": self.retry_failed,
                "gpus": ",".join(held) if need > 1 else None}  # fmt: skip
        try:
            reply = executor.call(index, task)
        except WorkerDied as e:
            if self.scheduler.stopping:  # Ctrl-C: a cell left running on disk is resumed by the next run
                if claim is not None:  # nobody else may write it: say so on disk now
                    record_worker_death(st.cell.run_dir, f"{e}; re-run the sweep to resume it", claim,
                                        status="interrupted")  # fmt: skip
                reply = {"outcome": "trained", "status": "interrupted", "message": str(e)}
            else:  # killed (out of memory, ...) or crashed: record it on disk, as the worker could not
                on_disk = record_worker_death(st.cell.run_dir, str(e), claim)
                status = on_disk if on_disk in FINAL else "failed"
                message = f"{e}; re-run the sweep to resume it" if status == "interrupted" else str(e)
                reply = {"outcome": "trained", "status": status, "message": message, "died": True}
        finally:
            self.gpu_pool.give_back(held)
            with self.lock:
                self.busy[index] = False
        self._finish(st, reply)
        if reply.get("outcome") == "busy":
            self.scheduler.later(st, BUSY_RETRY_S)

    def stop_workers(self) -> None:
        self.executor.close(timeout=10)

    def interrupt(self) -> None:
        """Ctrl-C: stop handing out cells, interrupt the cells in training (they save an interrupted run)."""
        self.interrupted = True
        if self.scheduler is not None:
            self.scheduler.stop()
        self.gpu_pool.stop()
        with self.lock:
            for i in range(self.executor.workers):
                if self.busy[i]:
                    self.executor.interrupt(i)

    # --- the whole thing
    def run(self) -> list[CellState]:
        for st in self.states:
            s = read_summary(st.cell.run_dir)
            st.summary = s
            status = s.get("status")
            # Final states decided from disk right away; the worker re-checks under the cell's lock anyway.
            if status == "completed":
                st.state, st.note = "completed", "completed earlier"
            elif status == "broken" and not self.retry_failed:
                st.state, st.note = status, s.get("message", "")
            elif status in RETRIED and not self.retry_failed:
                st.state, st.note = status, f"{status} earlier, not retried (--retry-failed retries it)"
        todo = [st for st in self.states if st.state == "pending"]
        self.display.opening(self.sweep.folder, len(self.states) - len(todo), len(todo))
        self.scheduler = Scheduler(todo)
        threads = [threading.Thread(target=self._slot, args=(i,), daemon=True) for i in range(self.executor.workers)]
        for t in threads:
            t.start()
        try:
            with self.display.showing() as refresh:
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=0.25)
                    refresh()
        except KeyboardInterrupt:
            self.interrupt()
            for t in threads:
                t.join()  # each cell in training saves itself as interrupted
        finally:
            self.stop_workers()
            self.index = self.write_index()
        return self.states


@dataclass
class SweepResult:
    states: list[CellState]
    index: Path
    interrupted: bool

    @property
    def ok(self) -> bool:
        return all(st.state == "completed" for st in self.states)


def run_sweep(
    sweep: Sweep,
    *,
    workers: int | None = None,
    retry_failed: bool = False,
    console: Console | None = None,
    ray: RayOptions | None = None,
) -> SweepResult:
    """Check every cell, then train the ones not done yet in worker processes (or as Ray tasks, ``ray``);
    resumable and idempotent."""
    console = console or wide_console()
    check_existing(sweep)
    todo = any(read_summary(c.run_dir).get("status") != "completed" for c in sweep.cells)
    if todo:  # nothing to train: no model checks (the index takes its figures from the summaries)
        inspect_cells(sweep)  # before anything is written: a bad cell leaves no trace
    if ray is not None and todo:  # nothing to train: no cluster to start or join
        from dlx.sweep.ray_executor import RayExecutor

        executor: Executor = RayExecutor(sweep, ray)
    else:
        executor = LocalPool(plan_workers(sweep, workers), sweep.folder / ".logs")
    runner = SweepRunner(sweep, executor, retry_failed=retry_failed, console=console)
    runner.write_index()
    states = runner.run()
    # The closing line tells what sweep.json (the state on disk) says, which is what a re-run goes by.
    summary = ", ".join(f"{n} {state}" for state, n in Counter(runner.index["counts"]).most_common())
    console.print(
        f"sweep {sweep.name}: {summary}; index {sweep.folder / 'sweep.json'}; compare with: dlx compare {sweep.folder}",
        markup=False,
        highlight=False,
    )
    if runner.interrupted:
        raise KeyboardInterrupt
    return SweepResult(states, sweep.folder / "sweep.json", runner.interrupted)


def show_plan(
    sweep: Sweep, workers: int | None = None, console: Console | None = None, ray: RayOptions | None = None
) -> None:
    """--dry-run: every cell with its settings, parameters, FLOPs and current state; nothing is written."""
    console = console or wide_console()
    inspect_cells(sweep)
    check_existing(sweep)
    table = Table(title=f"sweep {sweep.name}: {len(sweep.cells)} runs -> {sweep.folder}", title_justify="left")
    for col in ("cell", "settings", "parameters", "MFLOPs/image", "state"):
        table.add_column(col, justify="right" if col in ("parameters", "MFLOPs/image") else "left")
    for cell in sweep.cells:
        settings = " ".join(f"{k}={format_value(v)}" for k, v in cell.values.items())
        state = read_summary(cell.run_dir).get("status", "pending")
        flops = f"{cell.flops_per_image / 1e6:,.2f}" if cell.flops_per_image is not None else "-"
        table.add_row(cell.name, settings, f"{cell.parameters:,}", flops, state)
    console.print(table)
    epochs = sum(c.config.train.epochs for c in sweep.cells)
    if ray is not None:  # described, not started: a dry run starts nothing
        where = f"the cluster at {ray.address}" if ray.address else "a Ray instance on this machine"
        files = "shared file system" if ray.shared_fs else "no shared file system: files travel"
        how = f"Ray tasks on {where} ({files})"
    else:
        how = plan_workers(sweep, workers).describe(sweep)
    console.print(f"base {sweep.base}; {epochs} epochs in all; {how}", markup=False, highlight=False)
