"""File-system invariants of a run directory: atomic writes, names, locks, status.

Everything that must survive a crash or a Ctrl-C goes through here:
- whole files are written to a temp file in the same folder, fsync'ed, then renamed over
  the target (rename is atomic on POSIX), so readers see the old or the new file, never half;
- a run directory is created exclusively (mkdir fails if it exists): nothing is clobbered;
- a run directory is locked (filelock) while a process trains it, so two processes never
  train the same run.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dlx.errors import DlxError

TMP_SUFFIX = ".tmp"
# A folder name dlx creates (experiment name, run id); matched with fullmatch: ``$`` would allow a trailing newline.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, exclusive temp file next to ``path``. Unlike mkstemp (always 0600) it is created with mode 0666, so
    the user's umask decides the final file's permissions, as for any file a program writes."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


class DiskFull(DlxError):
    """A write failed for lack of space (or quota): the previous file is untouched, nothing half-written."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old or the complete new file.

    A full disk raises ``DiskFull`` naming the path, the space needed and the space free.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            try:
                free = _mib(shutil.disk_usage(path.parent).free)
            except OSError:
                free = "unknown"
            raise DiskFull(f"no space left writing {path}: needs {_mib(len(data))}, {free} free") from None
        raise
    _fsync_dir(path.parent)


def remove_leftover_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of writes a killed process never finished (``.<name>.*.tmp``) below ``folder``."""
    leftovers = [p for p in folder.rglob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_png_atomic(figure: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Render a matplotlib ``Figure`` into memory and write the PNG atomically: never half a picture on disk."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=dpi)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def _fsync_dir(folder: Path) -> None:
    # The rename itself lives in the directory entry; fsync the folder so it survives power loss.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- run directories

STATUSES = ("running", "completed", "failed", "interrupted", "diverged")
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
METRICS_STEPS = "metrics_steps.jsonl"  # a row every train.log_every steps
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"
RUN_FILES = (CONFIG_FILE, SUMMARY_FILE, METRICS_JSONL)  # any of them makes a folder a run folder


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _check_segment(value: str, what: str) -> str:
    if not value or not _SEGMENT.fullmatch(value):
        raise DlxError(f"{what} {value!r} is not a valid folder name: use letters, digits, '-', '_' and '.'")
    return value


class Run:
    """One run directory: runs/<name>/<run-id>/."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: FileLock | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # --- files
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_JSONL

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    def write_config(self, yaml_text: str) -> None:
        write_text_atomic(self.config_path, yaml_text)

    def read_summary(self) -> dict[str, Any]:
        try:
            return json.loads(self.summary_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            raise DlxError(f"{self.summary_path}: unreadable summary ({e})") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        if summary.get("status") not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {summary.get('status')!r}")
        write_json_atomic(self.summary_path, summary)

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl and metrics.csv from the whole history (a row per epoch).

        Rewriting (not appending) keeps both files equal to the checkpoint's history, also after a
        resume that replays epochs an interrupted process had started.
        """
        write_jsonl_atomic(self.metrics_path, history)
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        write_text_atomic(self.path / METRICS_CSV, buf.getvalue())

    def read_metrics(self, name: str = METRICS_JSONL) -> list[dict[str, Any]]:
        """metrics.jsonl's rows (``name=METRICS_STEPS``: metrics_steps.jsonl's); none when the file is missing."""
        path = self.path / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def write_step_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics_steps.jsonl whole, like metrics.jsonl: equal to what the checkpoint's steps produced."""
        write_jsonl_atomic(self.path / METRICS_STEPS, rows)

    # --- exclusive use
    @property
    def held(self) -> bool:
        """Whether this object holds the run's lock."""
        return self._lock is not None

    def acquire(self) -> None:
        """Claim the run for this process; another process holding it is an error, never a wait."""
        if self._lock is not None:
            return
        lock = FileLock(str(self.path / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise DlxError(f"{self.path} is in use by another dlx process; wait for it to finish") from None
        self._lock = lock
        remove_leftover_temp_files(self.path)  # only the lock holder may: nobody else is writing here

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def try_acquire(self) -> bool:
        try:
            self.acquire()
        except DlxError:
            return False
        return True


def check_run_id(run_id: str) -> str:
    """A ``--run-id`` that can name a folder (letters, digits, '-', '_', '.'); DlxError otherwise."""
    return _check_segment(run_id, "run id")


def create_run(runs_dir: str | os.PathLike[str], name: str, run_id: str | None = None) -> Run:
    """Make runs/<name>/<run-id>/ exclusively. An explicit run id that exists is refused, never reused."""
    _check_segment(name, "experiment name")
    if run_id is not None:
        check_run_id(run_id)
    parent = Path(runs_dir) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DlxError(f"cannot create {parent}: {e.strerror}") from None
    if run_id is not None:
        path = parent / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise DlxError(
                f"run directory {path} already exists; choose another --run-id, "
                f"or continue it with: dlx train --resume {path}"
            ) from None
        return Run(path)
    base = new_run_id()
    for n in range(1, 1000):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()  # atomic: two processes never get the same folder
        except FileExistsError:
            continue
        return Run(path)
    raise DlxError(f"could not find a free run id under {parent}")


def open_run(path: str | os.PathLike[str]) -> Run:
    """An existing run directory (for --resume); anything else is a clear error."""
    path = Path(path)
    if not path.exists():
        raise DlxError(f"--resume {path}: no such directory")
    if not path.is_dir():
        raise DlxError(f"--resume {path}: not a directory")
    if not (path / CONFIG_FILE).is_file():
        raise DlxError(f"--resume {path}: not a dlx run directory (no {CONFIG_FILE})")
    return Run(path)


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """A run folder, finished or not: it holds a file dlx writes into every run (RUN_FILES).

    Whether the run is complete (a summary with a status, a config) is for its reader to check.
    """
    return any((Path(path) / name).is_file() for name in RUN_FILES)


def find_runs(root: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """The run folders at or below ``root``, and the leaf folders below it that are not runs.

    Hidden folders (.logs, .git) and a run's checkpoints are never searched, and runs do not nest:
    nothing below a run folder is a run. Both lists come in walk order, folders sorted by name.
    """
    root = Path(root)
    runs: list[Path] = []
    others: list[Path] = []
    for folder, dirnames, _ in os.walk(root):
        path = Path(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != CHECKPOINT_DIR)
        if is_run_dir(path):
            runs.append(path)
            dirnames[:] = []
        elif not dirnames and path != root:
            others.append(path)
    return runs, others


# ---------------------------------------------------------------------------- sweeps

SWEEP_INDEX = "sweep.json"
SWEEP_INDEX_LOCK = ".sweep.lock"


def claim_cell(path: str | os.PathLike[str]) -> Run | None:
    """Create (or open) a sweep cell's run folder and lock it for this process.

    Returns the held Run, or None when another process holds the cell: the lock, not the folder's
    existence, is the claim, so a cell left behind by a killed process can be taken over and resumed.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DlxError(f"cannot create {path}: {e.strerror}") from None
    run = Run(path)
    return run if run.try_acquire() else None


def reset_run(run: Run) -> None:
    """Forget a previous attempt (checkpoints, metrics) before training a folder from scratch; hold its lock.

    A stale best.pt would otherwise be loaded for the test of a run that never improved on it.
    """
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    for name in (METRICS_JSONL, METRICS_CSV, METRICS_STEPS):
        (run.path / name).unlink(missing_ok=True)


def update_sweep_index(folder: str | os.PathLike[str], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Rewrite <folder>/sweep.json from ``build()`` under a lock shared by every sweep process.

    ``build`` reads the cells' state from disk inside the lock, so the last writer always writes the
    current truth even when two sweep processes finish cells at the same time.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / SWEEP_INDEX_LOCK), timeout=60):
        index = build()
        write_json_atomic(folder / SWEEP_INDEX, index)
    return index
