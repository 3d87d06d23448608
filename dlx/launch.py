"""One run on several processes: ``dlx train --devices N`` starts them, and each joins the run's process group.

Starting: ``launch`` checks the experiment once on the CPU (and downloads its data once), claims the run folder,
and starts N copies of ``python -m dlx.launch`` through ``torch.distributed.launcher.api.elastic_launch`` (the
API behind torchrun): rendezvous on localhost, ``max_restarts=0``. When any process fails, the elastic agent
ends the others and ``launch`` writes ``failed`` with that rank's error into summary.json.

Joining: ``train_in_group`` is what each process runs, whether this launcher or the user's own (``torchrun``,
``srun torchrun``) started it: it enters the process group, builds the run (the first process per machine
first: it may download), lets rank 0 claim the run folder and trains with ``fit``. Rank 0 alone writes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import torch

from dlx.config import ExperimentConfig, config_from_dict
from dlx.distributed import World, first_problem, from_environment, join, leave
from dlx.errors import DlxError, first_line
from dlx.runs import Run, create_run, open_run
from dlx.signals import Terminated

# Handed by ``launch`` to the processes it starts: the checked config, the claimed run folder, how to train.
LAUNCH_ENV = "DLX_LAUNCH"


class SharedError(DlxError):
    """An error every rank raises alike (rank 0's, broadcast): only rank 0 prints it."""


def processes_for(cfg: ExperimentConfig, devices: int | str | None = None) -> int:
    """How many processes this machine runs: ``devices`` (--devices) or train.devices; ``auto``: every GPU."""
    from dlx.devices import resolve_device

    wanted = cfg.train.devices if devices is None else devices
    device = resolve_device(cfg.train.device)
    if wanted == "auto":
        return torch.cuda.device_count() if device.type == "cuda" else 1
    n = int(wanted)
    if n > 1 and device.type == "cuda" and n > torch.cuda.device_count():
        raise DlxError(f"train.devices: {n} processes, one GPU each, but {torch.cuda.device_count()} CUDA device(s) "
                       "are visible; use at most that many (or 'auto')")  # fmt: skip
    if n > 1 and device.type == "mps":
        raise DlxError("train.devices: several processes need CUDA (NCCL) or the CPU (gloo); MPS has neither")
    return n


def check_launcher(cfg: ExperimentConfig, world: World, devices: int | str | None = None) -> None:
    """Under a user's launcher, it decides the processes; a different explicit train.devices is a mistake."""
    wanted = cfg.train.devices if devices is None else devices
    if isinstance(wanted, int) and wanted > 1 and wanted != world.local_size:
        raise DlxError(f"train.devices: {wanted}, but the launcher started {world.local_size} process(es) on this "
                       f"machine (LOCAL_WORLD_SIZE); drop train.devices or make the two agree")  # fmt: skip


# ---------------------------------------------------------------------------- the processes' side


def train_in_group(
    world: World,
    cfg: ExperimentConfig,
    *,
    run_path: str | Path | None = None,
    resume: bool = False,
    runs_dir: str | Path | None = None,
    run_id: str | None = None,
    claimed: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` as one of ``world.size`` processes; returns the summary (rank 0's figures on every rank).

    ``run_path``: the run folder (a resume, or one ``launch`` claimed: ``claimed``); otherwise rank 0 creates one
    under ``runs_dir`` and tells the others its path.
    """
    from dlx.build import prepare
    from dlx.devices import device_for
    from dlx.train import fit

    device = device_for(cfg, world)
    join(world, device, cfg.train.dist_timeout)
    run: Run | None = None
    try:
        setup, problem = None, None
        for first in (True, False):  # the first process of each machine builds first: it may download the data
            if (world.local_rank == 0) == first:
                try:
                    setup = prepare(cfg, world=world)
                except DlxError as e:
                    problem = str(e)
            world.barrier()
        _raise_first(world.all_objects(problem))
        run, problem = None, None
        if world.main:
            try:
                run = _claim(cfg, run_path, resume=resume, runs_dir=runs_dir, run_id=run_id, claimed=claimed)
            except DlxError as e:
                problem = str(e)
        path = world.broadcast_object(str(run.path) if run is not None else None)
        _raise_first([world.broadcast_object(problem)])
        if run is None:
            run = Run(path)  # the other ranks only name it: rank 0 writes
        assert setup is not None
        return fit(setup, run, resume=resume and run.last_checkpoint.exists(), quiet=quiet)
    finally:
        if run is not None and world.main and not claimed:
            run.release()
        leave()


def _raise_first(problems: list[str | None]) -> None:
    found = first_problem(problems)
    if found is not None:
        raise SharedError(found[1])


def _claim(
    cfg: ExperimentConfig,
    run_path: str | Path | None,
    *,
    resume: bool,
    runs_dir: str | Path | None,
    run_id: str | None,
    claimed: bool,
) -> Run:
    """Rank 0's run folder: the claimed one, the resumed one (locked, config unchanged) or a new one (locked)."""
    if run_path is not None:
        run = open_run(run_path) if resume else Run(run_path)
        if not claimed:
            if resume:
                from dlx.session import check_unchanged

                if run.last_checkpoint.exists():
                    check_unchanged(run, cfg)
            run.acquire()
        return run
    run = create_run(runs_dir if runs_dir is not None else cfg.output.runs_dir, cfg.name, run_id)
    run.acquire()
    return run


def die_with_parent(parent: int) -> None:
    """Linux: end this process (SIGTERM: its run is saved as interrupted) if the launching process dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_main() -> None:
    """The entry of a process ``launch`` started: train, then exit with the run's outcome."""
    import typer
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record

    from dlx.cli import guarded

    spec = json.loads(os.environ.pop(LAUNCH_ENV))
    die_with_parent(spec["parent"])
    sys.argv = spec["argv"]  # the run records the command the user typed

    @record
    def body() -> None:
        world = from_environment()
        if world is None:
            raise DlxError(f"{LAUNCH_ENV} is set but no launcher environment (RANK, WORLD_SIZE): run dlx train")
        cfg = config_from_dict(spec["config"]).from_file(spec["source_file"])

        def train() -> None:
            try:
                summary = train_in_group(world, cfg, run_path=spec["run"], resume=spec["resume"], claimed=True,
                                         quiet=spec["quiet"])  # fmt: skip
            except DlxError as e:  # the launcher shows this rank's error and writes it into summary.json
                ErrorHandler().record_exception(e)
                raise
            if summary["status"] != "completed":
                sys.exit(1)

        try:
            guarded(train)
        except typer.Exit as e:  # what guarded raises for the command line: this process's exit code
            sys.exit(e.exit_code)

    body()


# ---------------------------------------------------------------------------- the launcher's side


def check(cfg: ExperimentConfig, processes: int) -> None:
    """Every check a process would make, once, on the CPU before any starts: a mistake costs no process start-up,
    and the data is downloaded once instead of by every process at the same time."""
    from dlx.build import prepare

    prepare(cfg, world=World(0, processes, 0, processes), device=torch.device("cpu"))


def launch(
    cfg: ExperimentConfig,
    processes: int,
    *,
    run: Run | None = None,
    resume: bool = False,
    runs_dir: str | Path | None = None,
    run_id: str | None = None,
    quiet: bool = False,
    checked: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` on ``processes`` processes of this machine; returns the run's summary.

    ``run``: an existing folder (a resume, or a sweep cell this process holds); otherwise a new one is created.
    ``checked``: ``check`` has passed already.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not checked:
        check(cfg, processes)
    created = run is None
    if run is None:
        run = create_run(runs_dir if runs_dir is not None else cfg.output.runs_dir, cfg.name, run_id)
    took = not run.held  # a sweep cell comes held by its worker, which releases it
    run.acquire()
    spec = {"config": cfg.to_dict(), "source_file": cfg.source_file, "run": str(run.path), "resume": resume,
            "quiet": quiet, "argv": list(sys.argv), "parent": os.getpid()}  # fmt: skip
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free port on this machine
        max_restarts=0,  # a failed process fails the run; a restart would repeat the failure
        monitor_interval=0.1,
        start_method="spawn",
    )
    failed = ""
    try:
        with _worker_environment(spec, processes, cfg):
            elastic_launch(config, sys.executable)("-P", "-m", "dlx.launch")
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        failed = f"rank {rank} {_describe(failure)}"
        _record_failure(run, failed, rank)
    except SignalException as e:
        _record_interrupt(run, e.sigval)
        raise (Terminated if e.sigval == signal.SIGTERM else KeyboardInterrupt)(str(e)) from None
    finally:
        if created and not run.summary_path.exists():  # no process got as far as its first write: leave nothing
            import shutil

            run.release()
            shutil.rmtree(run.path, ignore_errors=True)
        if took:
            run.release()
    if not run.summary_path.exists():  # ended before training began: nothing was left behind
        raise DlxError(failed if failed else "the processes ended before training began")
    summary = run.read_summary()
    if summary.get("status") in ("failed", "diverged"):
        raise DlxError(f"{summary.get('message') or 'the run failed'} (run: {run.path})")
    return summary


class _worker_environment:
    """The environment the started processes inherit: the spec, and CPU threads split between them."""

    def __init__(self, spec: dict[str, Any], processes: int, cfg: ExperimentConfig) -> None:
        from dlx.devices import resolve_device

        self.values = {LAUNCH_ENV: json.dumps(spec)}
        if "OMP_NUM_THREADS" not in os.environ:  # as torchrun does, but sharing the cores instead of 1 thread each
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            on_cpu = resolve_device(cfg.train.device).type == "cpu"
            self.values["OMP_NUM_THREADS"] = str(max(1, cores // processes) if on_cpu else 1)
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _describe(failure: Any) -> str:
    """One line for a failed process: its error, or how it died."""
    if failure.signal_name() not in ("", "N/A", None) and failure.exitcode < 0:
        return f"was killed by {failure.signal_name()}"
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    text = first_line(str(message or ""))
    if not text or "pytorch.org/docs" in text:
        return f"exited with code {failure.exitcode}"
    return f"failed: {text}"


def _record_failure(run: Run, text: str, rank: int) -> None:
    """The run failed in ``rank``: summary.json says so with that rank's error, whatever rank 0 managed to write."""
    if not run.summary_path.exists():
        return
    summary = run.read_summary()
    status = summary.get("status")
    # Rank 0's own verdict stands when it is the root cause, or when it is not a consequence of another rank's end.
    if status == "running" or (rank != 0 and status in ("failed", "interrupted")):
        summary.update(status="failed", message=text, failed_rank=rank)
        run.write_summary(summary)


def _record_interrupt(run: Run, sig: int) -> None:
    """Ctrl-C or SIGTERM reached the launcher: the run is interrupted (rank 0 normally said so itself)."""
    if not run.summary_path.exists():
        return
    summary = run.read_summary()
    if summary.get("status") == "running":
        what = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"
        summary.update(status="interrupted", message=f"{what}; continue with: dlx train --resume {run.path}")
        run.write_summary(summary)


if __name__ == "__main__":
    worker_main()
