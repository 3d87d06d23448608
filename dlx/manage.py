"""Run folders as things to keep or throw away: list them, choose some, delete them, free checkpoint space.

What a run folder is and where runs are found is ``dlx.runs``' business (``find_runs``, ``is_run_dir``); the
lock a training process holds on its folder (``Run.acquire``) tells a live run from a ``stale`` one, whose
summary says ``running`` but whose process is gone, and keeps every deletion away from a run in use.
Nothing here prints: ``dlx.cli_runs`` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dlx.errors import DlxError
from dlx.runs import LOCK_FILE, STATUSES, SUMMARY_FILE, Run, find_runs, is_run_dir

STALE = "stale"  # recorded as running, but no process holds the run's lock
SHOWN_STATUSES = (*STATUSES, STALE)
FAILED_STATUSES = ("failed", "diverged", STALE)  # what ``dlx runs rm --failed`` deletes
MAX_SUMMARY_BYTES = 1 << 20  # dlx writes a few kilobytes
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,9})([smhdw])")


@dataclass
class RunInfo:
    """One run folder as listed: its summary, the status shown (``stale`` for a dead ``running``) and its age."""

    path: Path
    summary: dict[str, Any]
    status: str
    started: float | None  # seconds since the epoch: summary started_at, else the summary's modification time

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.path.parent.name)

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.path.name)

    @property
    def kind(self) -> str:
        return str(self.summary.get("kind") or "run")

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the run started (None when unknown)."""
        return None if self.started is None else max(0.0, (now or time.time()) - self.started)

    def row(self, now: float | None = None) -> dict[str, Any]:
        """The listed fields, plain values (CSV and JSON)."""
        s = self.summary
        age = self.age(now)
        return {"name": self.name, "run_id": self.run_id, "kind": self.kind, "status": self.status,
                "best_val_acc": _number(s.get("best_val_acc")), "test_acc": _number(s.get("test_acc")),
                "epochs_completed": _number(s.get("epochs_completed")), "epochs": _number(s.get("epochs")),
                "age_seconds": None if age is None else round(age), "started_at": s.get("started_at"),
                "path": str(self.path)}  # fmt: skip


@dataclass
class Skipped:
    path: Path
    reason: str


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_held(path: str | os.PathLike[str]) -> bool:
    """Whether a process holds the run folder's lock right now (a peek: taken and given back at once).

    No lock file means nobody ever locked it, so nobody holds it (nothing is created). A lock file that cannot
    be opened counts as held: never deleted, never called stale.
    """
    lock_path = Path(path) / LOCK_FILE
    if not lock_path.is_file():
        return False
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return True
    lock.release()
    return False


def read_summary(path: Path) -> dict[str, Any]:
    """A run's summary.json as a mapping with a valid status; DlxError (one line) saying why not."""
    file = path / SUMMARY_FILE
    try:
        st = os.stat(file)
    except FileNotFoundError:
        raise DlxError(f"no {SUMMARY_FILE} (never started, or not made by dlx)") from None
    except OSError as e:
        raise DlxError(f"{SUMMARY_FILE} unreadable: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
        raise DlxError(f"{SUMMARY_FILE} is not a regular file")
    if st.st_size > MAX_SUMMARY_BYTES:
        raise DlxError(f"{SUMMARY_FILE} is larger than {MAX_SUMMARY_BYTES >> 20} MiB")
    try:
        summary = json.loads(file.read_bytes())
    except OSError as e:
        raise DlxError(f"{SUMMARY_FILE} unreadable: {e.strerror}") from None
    except (ValueError, RecursionError):
        raise DlxError(f"{SUMMARY_FILE} is not valid JSON") from None
    if not isinstance(summary, dict) or summary.get("status") not in STATUSES:
        raise DlxError(f"{SUMMARY_FILE} has no valid status (one of {', '.join(STATUSES)})")
    return summary


def _started(path: Path, summary: dict[str, Any]) -> float | None:
    text = summary.get("started_at")
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None:
            return moment.timestamp()  # a time without an offset is local time
    try:
        return os.stat(path / SUMMARY_FILE).st_mtime
    except OSError:
        return None


def run_info(path: str | os.PathLike[str]) -> RunInfo:
    """One run folder read for listing; DlxError when it is not a readable run."""
    path = Path(path)
    summary = read_summary(path)
    status = summary["status"]
    if status == "running" and not is_held(path):
        status = STALE
    return RunInfo(path, summary, status, _started(path, summary))


def list_runs(root: str | os.PathLike[str]) -> tuple[list[RunInfo], list[Skipped]]:
    """Every run at or below ``root`` (sweep cells and ensembles too), and the folders that are not readable runs."""
    root = Path(root)
    if not root.exists():
        raise DlxError(f"{root}: no such folder")
    if not root.is_dir():
        raise DlxError(f"{root}: not a folder; give a folder of runs, a sweep folder or a run folder")
    run_dirs, others = find_runs(root)
    runs: list[RunInfo] = []
    skipped = [Skipped(p, "not a dlx run") for p in others]
    for path in run_dirs:
        try:
            runs.append(run_info(path))
        except DlxError as e:
            skipped.append(Skipped(path, str(e)))
    return runs, skipped


def check_statuses(statuses: Iterable[str]) -> list[str]:
    """``--status`` values (repeated or comma-separated) checked against the statuses a listing shows."""
    chosen = [s.strip() for text in statuses for s in text.split(",") if s.strip()]
    for s in chosen:
        if s not in SHOWN_STATUSES:
            raise DlxError(f"--status {s!r}: choose from {', '.join(SHOWN_STATUSES)}")
    return chosen


def parse_duration(text: str, option: str = "--older-than") -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` (also ``45s``) as seconds; DlxError for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise DlxError(f"{option} {text!r}: give a number and a unit, e.g. 30m, 12h, 7d or 2w")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_age(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def folder_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the files below ``path`` (links are not followed, nor counted by their target)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def select(
    runs: Iterable[RunInfo], *, failed: bool = False, older_than: float | None = None, now: float | None = None
) -> list[RunInfo]:
    """The runs ``dlx runs rm`` chooses: failed/diverged/stale ones (``failed``) older than ``older_than`` seconds;
    with both, runs that are both. Runs of unknown age are never older than anything."""
    now = now or time.time()
    chosen = []
    for r in runs:
        if failed and r.status not in FAILED_STATUSES:
            continue
        if older_than is not None:
            age = r.age(now)
            if age is None or age < older_than:
                continue
        chosen.append(r)
    return chosen


def named_runs(paths: Iterable[str | os.PathLike[str]]) -> list[RunInfo]:
    """Run folders given by name, all checked before anything happens: a path that is not a run folder (or is
    a link) is a DlxError. A run with an unreadable summary is still listed, status ``unreadable``."""
    infos = []
    for p in map(Path, paths):
        if p.is_symlink():
            raise DlxError(f"{p}: a link; give the run folder itself")
        if not p.is_dir():
            raise DlxError(f"{p}: no such run folder" if not p.exists() else f"{p}: not a folder")
        if not is_run_dir(p):
            raise DlxError(f"{p}: not a run folder (no config.yaml, summary.json or metrics.jsonl); nothing deleted")
        try:
            infos.append(run_info(p))
        except DlxError:
            infos.append(RunInfo(p, {}, "unreadable", None))
    return infos


def unique(runs: Iterable[RunInfo]) -> list[RunInfo]:
    """``runs`` without repeats (the same folder named twice, or named and chosen by a filter)."""
    seen: set[Path] = set()
    out = []
    for r in runs:
        key = r.path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _take(path: Path) -> FileLock | None:
    """The run folder's lock, taken without waiting; None when a process holds it (or it cannot be opened).

    Not ``Run.acquire``: that also sweeps the folder's temp files, which a ``dlx eval`` may be writing.
    """
    lock = FileLock(str(path / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return None
    return lock


def delete_run(path: str | os.PathLike[str]) -> bool:
    """Delete a run folder, holding its lock meanwhile so no process starts training it; False when a process
    holds it (nothing deleted)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    lock = _take(path)
    if lock is None:
        return False
    try:
        shutil.rmtree(path)
    finally:
        lock.release()
    return True


@dataclass
class CheckpointPlan:
    """What ``dlx runs clean-checkpoints`` deletes and what it keeps, and why."""

    delete: list[tuple[RunInfo, int]]  # a completed run's last.pt and its size in bytes
    kept_incomplete: list[RunInfo]  # not completed: last.pt is what a resume starts from
    kept_no_best: list[RunInfo]  # completed without best.pt: last.pt holds its only weights
    kept_held: list[RunInfo]  # a process holds the run

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.delete)


def checkpoint_plan(runs: Iterable[RunInfo]) -> CheckpointPlan:
    plan = CheckpointPlan([], [], [], [])
    for r in runs:
        run = Run(r.path)
        last = run.last_checkpoint
        if not last.is_file() or last.is_symlink():
            continue
        if r.status != "completed":
            plan.kept_incomplete.append(r)
        elif not run.best_checkpoint.is_file():
            plan.kept_no_best.append(r)
        elif is_held(r.path):
            plan.kept_held.append(r)
        else:
            plan.delete.append((r, last.stat().st_size))
    return plan


def delete_last_checkpoint(path: str | os.PathLike[str]) -> int:
    """Delete a completed run's checkpoints/last.pt under its lock; the bytes freed (0: held, or gone)."""
    run = Run(path)
    lock = _take(run.path)
    if lock is None:
        return 0
    try:
        last = run.last_checkpoint
        try:
            completed = read_summary(run.path)["status"] == "completed"
        except DlxError:
            completed = False
        if not completed or not run.best_checkpoint.is_file() or not last.is_file():
            return 0
        size = last.stat().st_size
        last.unlink()
        return size
    finally:
        lock.release()
