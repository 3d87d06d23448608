"""A sweep worker process: ``python -m dlx.sweep.worker`` (started by ``dlx sweep``, not by people).

Protocol: ``{"ready": true}`` on stdout once imports are done; then one JSON task per line on stdin
(``{"cell", "run_dir", "config", "retry_failed"}``) and one JSON result per line on stdout
(``run_cell``'s dict). EOF on stdin ends the worker.

The process sees only what the sweep gave it: ``CUDA_VISIBLE_DEVICES`` (its GPU) and
``DLX_SWEEP_THREADS`` / ``OMP_NUM_THREADS`` (its share of the CPU cores). A cell on several devices
(train.devices) is trained by processes it starts (dlx.launch), on the GPUs the task names. It runs in its own session,
so a terminal Ctrl-C reaches it only through the sweep (one SIGINT: the cell in training is saved
as interrupted). If the sweep process dies (SIGKILL), the worker notices it was orphaned and
interrupts itself the same way, so its cell is left resumable and its lock is released.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from dlx.config import ExperimentConfig, config_from_dict
from dlx.errors import DlxError
from dlx.runs import CONFIG_FILE, Run, claim_cell, new_run_id, reset_run
from dlx.sweep.checks import RETRIED, read_summary

# ---------------------------------------------------------------------------- one cell


def _fail_before_fit(run: Run, cfg: ExperimentConfig, previous: dict[str, Any], message: str) -> dict[str, Any]:
    """Record a cell that could not even start (dataset missing, ...) so compare lists it as failed."""
    if not run.config_path.exists():
        run.write_config(cfg.to_yaml())
    summary = {**previous, "status": "failed", "name": cfg.name, "run_id": run.path.name, "run_dir": str(run.path),
               "message": message}  # fmt: skip
    run.write_summary(summary)
    return summary


def _claimed(run_dir: str | Path) -> Run:
    """The cell folder the sweep process holds for this task: used without taking its lock."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return Run(run_dir)


def move_aside(run: Run) -> Path:
    """Rename a broken cell's folder to ``<cell>.broken-<time>`` (kept, never deleted) and release it."""
    aside = run.path.with_name(f"{run.path.name}.broken-{new_run_id()}")
    run.path.rename(aside)
    run.release()
    return aside


def processes_of(cfg: ExperimentConfig, gpus: str | None) -> int:
    """The processes a cell trains with: one per GPU it was handed, else train.devices (CPU: gloo; auto: 1)."""
    if gpus:
        return len(gpus.split(","))
    return 1 if cfg.train.devices == "auto" else int(cfg.train.devices)


def run_cell(
    run_dir: str | Path,
    config: dict[str, Any],
    *,
    retry_failed: bool = False,
    experiment_file: str | None = None,
    gpus: str | None = None,
    claimed: bool = False,
) -> dict[str, Any]:
    """Claim one cell and do what its state asks; returns ``{"outcome", "status", "message", ...}``.

    outcome: ``busy`` (another process holds it), ``skipped`` (completed, or failed without
    retry_failed), ``trained``, ``resumed``. KeyboardInterrupt propagates after the run is marked
    interrupted (fit does that), so the worker can report and stop. ``claimed``: the sweep process holds
    the cell's lock for this task (an executor on other machines, dlx.sweep.ray_executor). ``gpus``: the
    CUDA_VISIBLE_DEVICES of a cell on several GPUs, for the processes it starts.
    """
    try:
        return _run_cell(run_dir, config, retry_failed, experiment_file, gpus, claimed)
    finally:  # the cell's model and data are gone with _run_cell's frame
        release_gpu_memory()


def _run_cell(
    run_dir: str | Path,
    config: dict[str, Any],
    retry_failed: bool,
    experiment_file: str | None,
    gpus: str | None,
    claimed: bool,
) -> dict[str, Any]:
    run = _claimed(run_dir) if claimed else claim_cell(run_dir)
    if run is None:
        return {"outcome": "busy", "status": None, "message": "held by another dlx process"}
    try:
        previous = read_summary(run.path)  # {} for none; status "broken" for an unreadable one guarding results
        status = previous.get("status")
        if status == "completed":
            return {"outcome": "skipped", "status": status, "message": "completed earlier"}
        if status in RETRIED and not retry_failed:
            return {"outcome": "skipped", "status": status, "message": previous.get("message", "")}
        if status == "broken":  # --retry-failed: keep the old folder beside the cell, train a fresh one
            move_aside(run)
            fresh = _claimed(run_dir) if claimed else claim_cell(run_dir)
            if fresh is None:
                return {"outcome": "busy", "status": None, "message": "held by another dlx process"}
            run, previous, status = fresh, {}, None
        # The sweep's base experiment: the run records the git commit of the project it lives in.
        cfg = config_from_dict(config, str(run.path / CONFIG_FILE)).from_file(experiment_file)
        from dlx.build import prepare
        from dlx.launch import check, launch
        from dlx.train import fit

        processes = processes_of(cfg, gpus)
        try:
            if processes > 1:  # a cell on several devices: its processes are started by the launcher, checked first
                setup = None
                check(cfg, processes)
            else:
                setup = prepare(cfg)
        except DlxError as e:
            _fail_before_fit(run, cfg, previous, str(e))
            return {"outcome": "trained", "status": "failed", "message": str(e)}
        # "running" with the lock free means the process that ran it died: continue like an interrupted run.
        resume = status in ("interrupted", "running") and run.last_checkpoint.exists()
        from_epoch = int(previous.get("epochs_completed") or 0) if resume else 0
        if not resume:
            reset_run(run)
        try:
            if setup is not None:
                summary = fit(setup, run, resume=resume, quiet=True)
            else:  # this worker's share of the cores, split between the cell's processes; its GPUs
                import torch

                threads = max(1, torch.get_num_threads() // processes)
                summary = launch(cfg, processes, run=run, resume=resume, quiet=True, checked=True, threads=threads,
                                 visible_devices=gpus, claim=not claimed)  # fmt: skip
        except KeyboardInterrupt:
            raise
        except Exception as e:  # fit has marked the run failed or diverged; the sweep goes on
            summary = read_summary(run.path)
            summary.setdefault("status", "failed")
            summary.setdefault("message", f"{type(e).__name__}: {e}")
        return {
            "outcome": "resumed" if resume else "trained",
            "status": summary.get("status"),
            "message": summary.get("message", ""),
            "from_epoch": from_epoch,
        }
    finally:
        run.release()


def release_gpu_memory() -> None:
    """Give the GPU memory a finished in-process cell left in PyTorch's cache back to the driver: the worker's GPU
    may go to a multi-GPU cell of another worker next, which must find it empty (only the CUDA context stays)."""
    import torch

    if torch.cuda.is_initialized():
        gc.collect()  # tensors held in reference cycles (a traceback's frames) are freed first
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- the process


def _watch_parent(parent: int) -> None:
    # Re-parenting (to init or a subreaper) is how a child learns its parent died, on every POSIX system.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGINT)
            return


def _reply(channel: IO[str], result: dict[str, Any]) -> bool:
    try:
        channel.write(json.dumps(result, default=str) + "\n")
        channel.flush()
    except (BrokenPipeError, OSError):
        return False  # the sweep is gone; nobody to tell
    return True


def main() -> int:
    # SIGINT must raise KeyboardInterrupt here even when the sweep was started with SIGINT ignored
    # (a background job inherits SIG_IGN): it is how a cell in training is saved as interrupted.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    # Results go to a private copy of stdout; anything else printed (warnings, libraries) goes to the log.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        import torch

        threads = int(os.environ.get("DLX_SWEEP_THREADS") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
            torch.set_num_interop_threads(max(1, min(threads, 2)))
        import dlx.train  # noqa: F401 - import everything once, before the first task

        if not _reply(channel, {"ready": True}):
            return 1
        for line in sys.stdin:
            if not line.strip():
                continue
            task = json.loads(line)
            try:
                result = run_cell(task["run_dir"], task["config"], retry_failed=bool(task.get("retry_failed")),
                                  experiment_file=task.get("experiment_file"), gpus=task.get("gpus"))  # fmt: skip
            except KeyboardInterrupt:
                # fit saved the run as interrupted; report it and stop: the sweep is shutting down.
                _reply(channel, {"outcome": "interrupted", "status": "interrupted", "message": "interrupted"})
                return 130
            except Exception as e:  # a broken task must not take the other cells down with this process
                result = {"outcome": "trained", "status": "failed", "message": f"{type(e).__name__}: {e}"}
            result["cell"] = task.get("cell")
            if not _reply(channel, result):
                return 1
    except KeyboardInterrupt:
        return 130  # interrupted while idle or starting: nothing to save
    return 0


if __name__ == "__main__":
    sys.exit(main())
