"""One run on several processes: ``dlx train --devices N`` starts them, and each joins the run's process group.

``launch`` checks the experiment once on the CPU (and downloads its data once), claims the run folder, and
starts N copies of ``python -m dlx.rank_entry`` through ``torch.distributed.launcher.api.elastic_launch`` (the
API behind torchrun): rendezvous on localhost, ``max_restarts=0``. Each runs ``dlx.group.train_in_group``.
When any process fails, the elastic agent ends the others and ``launch`` writes ``failed`` with that rank's
error into summary.json.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlx.config import ExperimentConfig
from dlx.distributed import LOST_PEER, World
from dlx.errors import DlxError, first_line
from dlx.runs import Run, create_run
from dlx.signals import Terminated

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

# Handed by ``launch`` to the processes it starts: the checked config, the claimed run folder, how to train.
LAUNCH_ENV = "DLX_LAUNCH"


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
    threads: int | None = None,
    visible_devices: str | None = None,
    claim: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` on ``processes`` processes of this machine; returns the run's summary.

    ``run``: an existing folder (a resume, or a sweep cell this process holds); otherwise a new one is created.
    ``checked``: ``check`` has passed already. ``threads`` (CPU threads per process) and ``visible_devices``
    (their CUDA_VISIBLE_DEVICES) override what the processes inherit: a sweep cell's share of the machine.
    ``claim=False``: another process holds the run folder's lock for this run (a sweep driver).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not checked:
        check(cfg, processes)
    created = run is None
    if run is None:
        run = create_run(runs_dir if runs_dir is not None else cfg.output.runs_dir, cfg.name, run_id)
    took = claim and not run.held  # a sweep cell comes held by its worker (or its driver), which releases it
    if took:
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
        with _worker_environment(spec, processes, cfg, threads, visible_devices):
            elastic_launch(config, sys.executable)("-P", "-m", "dlx.rank_entry")
    except ChildFailedError as e:
        rank, failure = root_failure(e)
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

    def __init__(
        self,
        spec: dict[str, Any],
        processes: int,
        cfg: ExperimentConfig,
        threads: int | None = None,
        visible_devices: str | None = None,
    ) -> None:
        from dlx.devices import resolve_device

        self.values = {LAUNCH_ENV: json.dumps(spec)}
        if visible_devices is not None:
            self.values["CUDA_VISIBLE_DEVICES"] = visible_devices
        if threads is not None:
            self.values["OMP_NUM_THREADS"] = self.values["MKL_NUM_THREADS"] = str(threads)
        elif "OMP_NUM_THREADS" not in os.environ:  # as torchrun does, but sharing the cores instead of 1 thread each
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


def root_failure(error: ChildFailedError) -> tuple[int, Any]:
    """The failure that caused the others: torch's first by time, unless that rank only lost another process,
    then the lowest rank that failed otherwise. Times are whole seconds, and a killed rank's is when the agent
    saw it: the rank that lost its peer often ties with it or comes first."""
    rank, failure = error.get_first_failure()
    if not _lost_peer(failure):
        return rank, failure
    causes = [(r, f) for r, f in sorted(error.failures.items()) if not _lost_peer(f)]
    return causes[0] if causes else (rank, failure)


def _lost_peer(failure: Any) -> bool:
    return LOST_PEER in str(failure.message or "")


def _describe(failure: Any) -> str:
    """One line for a failed process: its error, or how it died."""
    if failure.signal_name() not in ("", "N/A", None) and failure.exitcode < 0:
        hint = " (e.g. out of memory)" if failure.signal_name() == "SIGKILL" else ""  # the OOM killer's signal
        return f"was killed by {failure.signal_name()}{hint}"
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
