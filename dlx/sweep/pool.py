"""Worker processes of a sweep: how many and where (``plan_workers``), and one ``python -m dlx.sweep.worker`` child."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlx.config import ExperimentConfig
from dlx.sweep.spec import Sweep


class WorkerDied(Exception):
    pass


def exit_text(code: int | None) -> str:
    """How a process ended, from its exit code: ``killed by signal 9 (SIGKILL, e.g. out of memory; exit code -9)``."""
    if code is None:
        return "stopped answering but did not exit"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "unknown signal"
    hint = ", e.g. out of memory" if -code == signal.SIGKILL else ""  # the OOM killer's signal
    return f"killed by signal {-code} ({name}{hint}; exit code {code})"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """CUDA device ids this process can hand out, as CUDA_VISIBLE_DEVICES entries."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return []
    listed = [x.strip() for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    return listed[:n] if listed else [str(i) for i in range(n)]


def gpus_needed(cfg: ExperimentConfig, gpus: list[str]) -> int:
    """GPUs a cell takes from the sweep's: none on CPU, else its train.devices (``auto``: all of them)."""
    if not gpus or cfg.train.device == "cpu":
        return 0
    return len(gpus) if cfg.train.devices == "auto" else int(cfg.train.devices)


class GpuPool:
    """The sweep's GPUs, each held by at most one cell at a time (thread-safe).

    A one-GPU cell runs on its worker's own GPU (the worker process sees only that one); a cell on N GPUs
    takes any N free ones for the processes it starts. Requests wait until they can be met; while a
    multi-GPU request waits, later requests do not jump ahead of it (it would never find enough free).
    """

    def __init__(self, ids: list[str]) -> None:
        self.ids = list(ids)
        self._free = list(ids)
        self._cond = threading.Condition()
        self._waiting: list[tuple[object, int]] = []
        self._stopping = False

    def take(self, n: int, own: str | None = None) -> list[str] | None:
        """``n`` GPUs (n == 1 with ``own``: that GPU) once free; None when the sweep stops first."""
        if n > len(self.ids):
            raise ValueError(f"{n} GPUs asked of {len(self.ids)}")
        ticket = object()
        with self._cond:
            self._waiting.append((ticket, n))
            try:
                while not self._stopping:
                    got = self._grant(ticket, n, own)
                    if got is not None:
                        return got
                    self._cond.wait()
                return None
            finally:
                self._waiting = [w for w in self._waiting if w[0] is not ticket]
                self._cond.notify_all()

    def _grant(self, ticket: object, n: int, own: str | None) -> list[str] | None:
        for other, wanted in self._waiting:
            if other is ticket:
                break
            if wanted > 1:
                return None  # an earlier multi-GPU request goes first
        if n == 1 and own is not None:
            chosen = [own] if own in self._free else []
        else:
            chosen = self._free[:n] if len(self._free) >= n else []
        if len(chosen) != n:
            return None
        self._free = [g for g in self._free if g not in chosen]
        return chosen

    def give_back(self, ids: list[str]) -> None:
        with self._cond:
            self._free += [g for g in ids if g not in self._free]
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()


@dataclass
class Plan:
    """How cells are spread over processes."""

    workers: int
    threads: int  # torch CPU threads per worker
    gpus: list[str]  # one device per worker slot (round robin); empty on CPU

    def describe(self, sweep: Sweep | None = None) -> str:
        each = f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} each"
        where = f"GPUs {', '.join(self.gpus)}" if self.gpus else "CPU"
        text = f"{self.workers} worker{'s' if self.workers != 1 else ''} on {where}, {each}"
        cells = sweep.cells if sweep else []
        many = sorted({gpus_needed(c.config, self.gpus) for c in cells} - {0, 1})
        if many:
            text += (f"; cells on {' or '.join(map(str, many))} GPUs take that many free GPUs, never shared "
                     f"(they wait for them)")  # fmt: skip
        gloo = sorted({_cpu_processes(c.config, self.gpus) for c in cells} - {1})
        if gloo:
            text += (f"; cells with train.devices {' or '.join(map(str, gloo))} on CPU train on that many gloo "
                     f"processes sharing their worker's threads")  # fmt: skip
        return text

    def env(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        t = str(self.threads)
        # OpenMP/MKL read these at start: with W workers each gets cores/W threads, never more (no oversubscription).
        env.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, DLX_SWEEP_THREADS=t, PYTHONUNBUFFERED="1")
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]  # the worker sees only its GPU
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding dlx/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["DLX_IMPORT_PATH"] = os.getcwd()  # where class_path modules are looked for, recorded explicitly
        return env


def _cpu_processes(cfg: ExperimentConfig, gpus: list[str]) -> int:
    """Processes of a cell that trains on the CPU (dlx.sweep.worker.processes_of): its int train.devices; else 1."""
    from dlx.devices import resolve_device

    if gpus_needed(cfg, gpus) or cfg.train.devices == "auto" or int(cfg.train.devices) < 2:
        return 1
    return int(cfg.train.devices) if resolve_device(cfg.train.device).type == "cpu" else 1


def sweep_gpus(sweep: Sweep) -> list[str]:
    """The GPUs a sweep hands out: the visible ones when some cell may use CUDA (auto, cuda) and every other cell
    is on the CPU; none when a cell names its GPU (cuda:1) or its device (mps), which the sweep then leaves alone."""
    devices = {c.config.train.device for c in sweep.cells}
    if not devices & {"auto", "cuda"} or not devices <= {"auto", "cuda", "cpu"}:
        return []
    return visible_gpus()


def plan_workers(sweep: Sweep, workers: int | None) -> Plan:
    """One worker per GPU when cells may use CUDA; on CPU ``workers`` processes (default 1) sharing the cores."""
    gpus = sweep_gpus(sweep)
    n = workers or sweep.spec.workers or (len(gpus) if gpus else 1)
    n = max(1, min(n, len(sweep.cells)))
    return Plan(workers=n, threads=max(1, cpu_count() // n), gpus=gpus)


def worker_command() -> list[str]:
    """``python -P -m dlx.sweep.worker``: the working directory is NOT put first on sys.path, so a ``json.py``
    where the user runs ``dlx sweep`` is never imported by a worker (Python < 3.11 has no -P: -I, isolated).
    User modules for ``model.class_path`` are found through ``DLX_IMPORT_PATH`` (set by ``Plan.env``), appended
    to the end of sys.path."""
    return [sys.executable, "-P" if sys.version_info >= (3, 11) else "-I", "-m", "dlx.sweep.worker"]


class WorkerProcess:
    """A ``python -m dlx.sweep.worker`` child: JSON tasks on its stdin, JSON results on its stdout."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        # Own session: a Ctrl-C in the terminal reaches only the sweep, which forwards exactly one SIGINT.
        self.proc = subprocess.Popen(
            worker_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._ready = False

    def wait_ready(self) -> None:
        """Block until the worker has imported torch and dlx (it says so in one line), so cell times are true."""
        assert self.proc.stdout is not None
        if not self._ready:
            if not self.proc.stdout.readline():
                raise WorkerDied(self._death_note())
            self._ready = True

    def call(self, task: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wait_ready()
        try:
            self.proc.stdin.write(json.dumps(task) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise WorkerDied(self._death_note())
        return json.loads(line)

    def _death_note(self) -> str:
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        tail = ""
        if code != -signal.SIGKILL:  # a killed process wrote nothing about it: its last line would mislead
            try:
                lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
                tail = f": {lines[-1][:200]}" if lines else ""
            except OSError:
                pass
        return f"worker process {exit_text(code)}{tail} (log: {self.log_path})"

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)

    def close(self, timeout: float = 30) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()  # EOF: an idle worker exits
            self.proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self._log.close()
