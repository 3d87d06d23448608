"""Sweeps on a Ray cluster: every cell a Ray task (``dlx sweep NAME --executor ray [--address auto]``).

The sweep process (the driver) claims each cell's folder lock before it submits the cell, so two drivers
never train one cell twice, and holds it until the task has ended. A task declares what it uses: ``num_cpus``
(its torch threads) and ``num_gpus`` (train.devices on CUDA; Ray sets CUDA_VISIBLE_DEVICES, dlx takes what it
is given). Tasks are never retried by Ray (``max_retries=0``): a task that dies (node lost, out of memory,
kill -9) leaves its cell ``failed`` with the reason; Ctrl-C cancels the tasks in flight (``ray.cancel``), which
save their cells as interrupted.

On a shared file system a task writes its cell folder itself. Without one (``--no-shared-fs``) the driver sends
the cell's files (a resume's checkpoints included) with the task, the task trains in a local temporary folder
and returns the run's files (checkpoints only with ``--fetch-checkpoints``), which the driver writes atomically.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlx.errors import DlxError, first_line
from dlx.runs import Run, write_bytes_atomic
from dlx.sweep.pool import WorkerDied, cpu_count
from dlx.sweep.spec import Sweep

# Where a task trains without a shared file system (default: the system's temporary folder).
WORKDIR_ENV = "DLX_RAY_WORKDIR"
CHECKPOINTS = "checkpoints"


def require_ray() -> Any:
    """The ray module, or the one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DlxError("--executor ray needs Ray, an optional extra: pip install 'dlx[ray]'") from None
    return ray


@dataclass
class RayOptions:
    address: str | None = None  # None: start a Ray instance on this machine; 'auto' / 'host:6379': join a cluster
    shared_fs: bool = True
    fetch_checkpoints: bool = False
    workers: int | None = None  # cells at once (default: as many as the cluster's CPUs fit)


def pack(folder: Path, *, checkpoints: bool = True) -> dict[str, bytes]:
    """A run folder's files by relative path (the lock and temporary files left out)."""
    files: dict[str, bytes] = {}
    if not folder.is_dir():
        return files
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or path.name.startswith(".") or path.name.endswith(".tmp"):
            continue
        if not checkpoints and rel.startswith(f"{CHECKPOINTS}/"):
            continue
        files[rel] = path.read_bytes()
    return files


def unpack(files: dict[str, bytes], folder: Path) -> None:
    """Write ``pack``'s files into ``folder``, each atomically (a reader never sees half a file)."""
    for rel, data in files.items():
        target = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise DlxError(f"refusing to write {rel!r} outside {folder}")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)


def train_cell(task: dict[str, Any], files: dict[str, bytes] | None, fetch_checkpoints: bool) -> dict[str, Any]:
    """The Ray task: train one cell with the CPUs and GPUs Ray gave it; ``files``: no shared file system."""
    import ray
    import torch

    from dlx.sweep.worker import run_cell

    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    gpus = visible if int(assigned.get("GPU", 0)) > 1 else None  # one GPU: this process uses it itself

    def run(run_dir: str) -> dict[str, Any]:
        return run_cell(run_dir, task["config"], retry_failed=bool(task.get("retry_failed")),
                        experiment_file=task.get("experiment_file"), gpus=gpus, claimed=True)  # fmt: skip

    if files is None:
        return {"reply": run(task["run_dir"])}
    with tempfile.TemporaryDirectory(prefix="dlx-cell-", dir=os.environ.get(WORKDIR_ENV) or None) as tmp:
        folder = Path(tmp) / Path(task["run_dir"]).name
        folder.mkdir()
        unpack(files, folder)
        reply = run(str(folder))
        return {"reply": reply, "files": pack(folder, checkpoints=fetch_checkpoints)}


class RayExecutor:
    """Cells as Ray tasks; one runner slot per cell in flight."""

    claims = True

    def __init__(self, sweep: Sweep, options: RayOptions) -> None:
        ray = require_ray()
        self.gpus: list[str] = []  # none handed out by the sweep: Ray assigns GPUs
        self.ray, self.options = ray, options
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.started = not ray.is_initialized()
        if self.started:
            env = {"DLX_IMPORT_PATH": os.getcwd()}  # where tasks find class_path modules, as local workers do
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                                      "runtime_env": {"env_vars": env}}  # fmt: skip
            try:
                if options.address:
                    ray.init(address=options.address, **kwargs)
                else:
                    ray.init(num_cpus=cpu_count(), **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise DlxError(f"--address {options.address}: cannot reach a Ray cluster ({first_line(e)})") from None
        resources = ray.cluster_resources()
        self.cluster_cpus = max(1, int(resources.get("CPU", 1)))
        self.cluster_gpus = int(resources.get("GPU", 0))
        n = options.workers or self.cluster_cpus
        self.workers = max(1, min(n, len(sweep.cells)))
        self.cpus_per_cell = max(1, self.cluster_cpus // self.workers)
        self.remote = ray.remote(train_cell)
        self._refs: list[Any] = [None] * self.workers

    def describe(self, sweep: Sweep | None = None) -> str:
        where = self.options.address or "a Ray instance on this machine"
        files = "shared file system" if self.options.shared_fs else "no shared file system: files travel"
        return (f"Ray ({where}: {self.cluster_cpus} CPUs, {self.cluster_gpus} GPUs), {self.workers} cells at once, "
                f"{self.cpus_per_cell} CPU{'s' if self.cpus_per_cell != 1 else ''} each; {files}")  # fmt: skip

    def gpus_of(self, config: dict[str, Any]) -> int:
        train = config.get("train", {})
        if not self.cluster_gpus or train.get("device") not in ("auto", "cuda"):
            return 0
        devices = train.get("devices", 1)
        return 1 if devices == "auto" else int(devices)

    def prepare(self, slot: int) -> None:
        return None

    def call(self, slot: int, task: dict[str, Any]) -> dict[str, Any]:
        ray = self.ray
        folder = Path(task["run_dir"]).resolve()  # a task's working folder is not the driver's
        task = {**task, "run_dir": str(folder), "experiment_file": str(Path(task["experiment_file"]).resolve())}
        files = None if self.options.shared_fs else pack(folder)
        ref = self.remote.options(num_cpus=self.cpus_per_cell, num_gpus=self.gpus_of(task["config"]),
                                  max_retries=0, name=f"dlx:{task.get('cell')}").remote(
            task, files, self.options.fetch_checkpoints
        )  # fmt: skip
        self._refs[slot] = ref
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            if files is None:
                self.await_saved(folder, ref)
            raise WorkerDied("Ray task cancelled") from None
        except ray.exceptions.RayError as e:  # the worker process or its node died, or the task could not run
            raise WorkerDied(f"Ray task failed: {type(e).__name__}: {first_line(e)}") from None
        finally:
            self._refs[slot] = None
        if files is not None:
            self.store(folder, result.get("files") or {})
        return result["reply"]

    def await_saved(self, folder: Path, ref: Any, limit: float = 30.0) -> None:
        """A cancelled task saves its cell as interrupted as it ends: wait until the cell's summary no longer says
        ``running`` (so no later write of the task's can undo the driver's), or end the task's process."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                status = Run(folder).read_summary().get("status")
            except DlxError:
                status = None
            if status != "running":
                return
            time.sleep(0.2)
        self.ray.cancel(ref, force=True)  # it did not end: its process is killed; the driver marks the cell
        self.ray.wait([ref], timeout=10)

    def store(self, folder: Path, files: dict[str, bytes]) -> None:
        """Write a task's returned run files into the cell folder; its summary names the folder it is in."""
        import json

        summary = files.pop("summary.json", None)
        unpack(files, folder)
        if summary is not None:  # last: a folder whose summary says completed has all its files
            data = json.loads(summary)
            data["run_dir"] = str(folder)
            Run(folder).write_summary(data)

    def interrupt(self, slot: int) -> None:
        ref = self._refs[slot]
        if ref is not None:
            self.ray.cancel(ref)  # KeyboardInterrupt in the task: its cell is saved as interrupted

    def close(self, slot: int | None = None, timeout: float = 30) -> None:
        if slot is None and self.started and self.ray.is_initialized():
            self.ray.shutdown()
