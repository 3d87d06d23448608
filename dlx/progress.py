"""What a training prints: a live progress bar per epoch, a line per epoch, a final table (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from dlx.build import Setup
    from dlx.config import ExperimentConfig
    from dlx.runs import Run


def pct(x: object) -> str:
    """A fraction as a percentage with two decimals; '-' for anything that is not a number."""
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None, *, silent: bool = False) -> None:
        """``quiet``: only alerts; ``silent``: nothing at all (a process other than rank 0 of several)."""
        self.quiet = quiet or silent
        self.silent = silent
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.epochs = 0

    def start(self, cfg: ExperimentConfig, setup: Setup, run: Run, start_epoch: int) -> None:
        self.epochs = cfg.train.epochs
        if self.quiet:
            return
        verb = f"resuming at epoch {start_epoch + 1}" if start_epoch else "training"
        self.console.print(
            f"[bold]{cfg.name}[/]: {verb} {cfg.model.name} (width {cfg.model.width:g}, depth {cfg.model.depth:g}, "
            f"{setup.parameters:,} params, {setup.flops_per_image / 1e6:.1f} MFLOPs/image) on "
            f"{cfg.data.dataset} ({len(setup.train):,} train / {len(setup.val) if setup.val else 0:,} val / "
            f"{len(setup.test):,} test) - device {setup.device}, {cfg.train.precision}\n  run: {run.path}"
        )

    def epoch_start(self, epoch: int, steps: int) -> None:
        if self.quiet:
            return
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, stats="")

    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None:
        if self.progress is not None:
            stats = f"loss {loss:.4f} acc {pct(acc)} {images_per_s:,.0f} img/s"
            self.progress.update(self.task, completed=done, stats=stats)

    def epoch_end(self, row: dict[str, Any], improved: bool) -> None:
        self.stop()
        if self.quiet:
            return
        val = ""
        if row.get("val_loss") is not None:
            val = f"  val loss {row['val_loss']:.4f} acc {pct(row['val_acc'])}{' *' if improved else ''}"
        self.console.print(
            f"epoch {row['epoch']:>3}/{self.epochs}  train loss {row['train_loss']:.4f} acc {pct(row['train_acc'])}"
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s  {row['images_per_s']:,.0f} img/s"
        )

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def alert(self, text: str) -> None:
        """A line the user must see even with --quiet (how to resume an interrupted run)."""
        if not self.silent:
            self.console.print(text, markup=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def final(self, summary: dict[str, Any]) -> None:
        if self.quiet:
            return
        table = Table(title=f"{summary['name']} / {summary['run_id']}", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        rows = [
            ("status", summary["status"]),
            ("test accuracy", pct(summary.get("test_acc"))),
            ("test loss", f"{summary.get('test_loss', float('nan')):.4f}"),
            ("best val accuracy", f"{pct(summary.get('best_val_acc'))} (epoch {summary.get('best_epoch', '-')})"),
            ("epochs", f"{summary.get('epochs_completed')}/{summary.get('epochs')}"),
            ("parameters", f"{summary['parameters']:,}"),
            ("train time", f"{summary.get('train_seconds', 0):.1f}s"),
            ("images/s", f"{summary.get('images_per_s', 0):,.0f}"),
            ("run", summary["run_dir"]),
        ]
        for k, v in rows:
            table.add_row(k, str(v))
        self.console.print(table)
