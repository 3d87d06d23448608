"""What a running sweep shows: a live table on a terminal, else one line per finished cell (files, pipes, CI)."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from dlx.progress import pct
from dlx.runs import Run
from dlx.sweep.executors import Executor
from dlx.sweep.state import FINAL, CellState

STYLES = {"completed": "green", "failed": "red", "diverged": "red", "broken": "red", "interrupted": "yellow",
          "running": "cyan", "elsewhere": "magenta", "pending": "dim"}  # fmt: skip


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def cell_progress(st: CellState) -> tuple[int, float | None]:
    """Epochs done and the last validation accuracy, from the cell's metrics.jsonl."""
    try:
        rows = Run(st.cell.run_dir).read_metrics()
    except (OSError, ValueError):
        return 0, None
    accs = [r.get("val_acc") for r in rows if r.get("val_acc") is not None]
    return len(rows), (accs[-1] if accs else None)


class Display:
    """The sweep's progress on ``console``: live when it is a terminal, line by line otherwise.

    It reads the runner's cell states under the runner's ``lock``; it never changes them.
    """

    def __init__(
        self, name: str, plan: Executor, console: Console, states: list[CellState], lock: threading.Lock
    ) -> None:
        self.name = name
        self.plan = plan
        self.console = console
        self.states = states
        self.lock = lock
        self.live = console.is_terminal
        self.started = time.monotonic()

    # --- line mode
    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def opening(self, folder: Path, earlier: int, todo: int) -> None:
        """The first line of a sweep in line mode: how many cells, where, and how many are left."""
        if not self.live:
            self._print(
                f"sweep {self.name}: {len(self.states)} cells in {folder} "
                f"({earlier} already decided, {todo} to do); {self.plan.describe()}"
            )

    def cell_line(self, st: CellState) -> None:
        """``[done/total] cell: state in 3s (val ..., test ...) - note``, in line mode only."""
        if self.live:
            return
        with self.lock:
            done = sum(s.state in FINAL for s in self.states)
            s = st.summary
            line = f"[{done}/{len(self.states)}] {st.cell.name}: {st.state}"
            if st.trained_here and st.started is not None and st.ended is not None:
                line += f" in {_duration(st.ended - st.started)}"
            if st.state == "completed":
                line += f" (val {pct(s.get('best_val_acc'))}, test {pct(s.get('test_acc'))})"
            line += f" - {st.note}" if st.note else ""
        self._print(line)

    # --- live mode
    @contextmanager
    def showing(self) -> Iterator[Callable[[], None]]:
        """While inside: the live table (on a terminal); yields the function that redraws it."""
        if not self.live:
            yield lambda: None
            return
        with Live(self.render(), console=self.console, refresh_per_second=4) as live:
            yield lambda: live.update(self.render())

    def eta(self) -> float | None:
        """Seconds left: epochs left times the seconds per epoch seen so far, over the workers."""
        spent, epochs_done, left = 0.0, 0, 0
        now = time.monotonic()
        for st in self.states:
            total = st.cell.config.train.epochs
            if st.state == "running" and st.started is not None:
                done, _ = cell_progress(st)
                spent += now - st.started
                epochs_done += max(0, done - st.from_epoch)
                left += max(0, total - done)
            elif st.trained_here and st.started is not None and st.ended is not None:
                spent += st.ended - st.started
                epochs_done += max(0, int(st.summary.get("epochs_completed") or total) - st.from_epoch)
            elif st.state in ("pending", "elsewhere"):
                left += total
        if left == 0:
            return 0.0
        if epochs_done == 0:
            return None
        return spent / epochs_done * left / self.plan.workers

    def render(self) -> RenderableType:
        table = Table(title=f"sweep {self.name}", title_justify="left", expand=False)
        for col, justify in (("cell", "left"), ("state", "left"), ("epochs", "left"), ("val acc", "right"),
                             ("test acc", "right"), ("time", "right"), ("note", "left")):  # fmt: skip
            table.add_column(col, justify=justify, no_wrap=col != "note", overflow="fold" if col == "note" else None)
        now = time.monotonic()
        with self.lock:
            states = list(self.states)
        limit = max(5, self.console.height - 8)
        if len(states) > limit:  # keep the live cells in view; the rest is summed up below
            active = [s for s in states if s.state in ("running", "elsewhere")]
            ended = sorted((s for s in states if s.state in FINAL and s.ended), key=lambda s: s.ended or 0)
            states = active + ended[-max(0, limit - len(active)) :]
        for st in states:
            total = st.cell.config.train.epochs
            done, val = cell_progress(st) if st.state in ("running", "elsewhere") else (0, None)
            if st.state in FINAL:
                done = int(st.summary.get("epochs_completed") or 0)
                val = st.summary.get("best_val_acc")
            bar = Table.grid(padding=(0, 1))
            bar.add_row(ProgressBar(total=total, completed=min(done, total), width=10), f"{done}/{total}")
            state: RenderableType = Text(st.state, style=STYLES.get(st.state, ""))
            if st.state == "running":
                state = Spinner("dots", text=Text("running", style="cyan"))
            elapsed = (st.ended if st.state in FINAL and st.ended else now) - st.started if st.started else None
            table.add_row(st.cell.name, state, bar, pct(val), pct(st.summary.get("test_acc")),
                          _duration(elapsed) if st.trained_here or st.state == "running" else "-", st.note)  # fmt: skip
        counts = Counter(s.state for s in self.states)
        eta = self.eta()
        parts = [f"{counts[k]} {k}" for k in ("completed", "running", "elsewhere", "pending", "failed", "diverged",
                                              "interrupted") if counts[k]]  # fmt: skip
        footer = Text(
            f"{len(self.states)} cells: {', '.join(parts)} | elapsed {_duration(now - self.started)} | "
            f"ETA {_duration(eta) if eta is not None else 'estimating...'} | {self.plan.describe()}"
        )
        return Group(table, footer)
