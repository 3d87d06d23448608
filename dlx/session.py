"""The steps of a ``dlx train`` invocation: validate and build, then claim a run folder, then fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.config import ExperimentConfig, load_run_config
from dlx.errors import DlxError
from dlx.runs import Run, check_run_id, create_run, open_run


def start_run(
    cfg: ExperimentConfig,
    *,
    runs_dir: str | Path | None = None,
    run_id: str | None = None,
    quiet: bool = False,
    run: Run | None = None,
) -> dict[str, Any]:
    """Build everything first (errors leave nothing behind), then create the run folder and train."""
    from dlx.build import prepare
    from dlx.train import fit

    if run_id is not None:
        check_run_id(run_id)  # before the data and the model are built: a typo costs nothing
    setup = prepare(cfg)
    if run is None:
        run = create_run(runs_dir if runs_dir is not None else cfg.output.runs_dir, cfg.name, run_id)
    run.acquire()
    try:
        return fit(setup, run, quiet=quiet)
    finally:
        run.release()


def resume_run(path: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Continue a run from checkpoints/last.pt; a completed run is reported, not retrained."""
    from dlx.build import prepare
    from dlx.train import fit

    run = open_run(path)
    summary = run.read_summary()
    if summary.get("status") == "completed":
        raise DlxError(f"{run.path} is already completed (test accuracy {summary.get('test_acc')}); nothing to resume")
    cfg = load_run_config(run.config_path)
    setup = prepare(cfg)
    run.acquire()
    try:
        if not run.last_checkpoint.exists():
            # Stopped before the first epoch ended: start over inside the same folder.
            return fit(setup, run, quiet=quiet)
        return fit(setup, run, resume=True, quiet=quiet)
    finally:
        run.release()


def dry_run(cfg: ExperimentConfig) -> None:
    """Print the resolved config and a model summary (layers, output shapes, parameters); write nothing."""
    from rich.syntax import Syntax

    from dlx.build import prepare
    from dlx.console import wide_console
    from dlx.inspect import Target, print_inspect

    try:
        setup = prepare(cfg, download=False)  # a dry run writes nothing: no data folder, no download
    except DlxError as e:
        raise DlxError(f"{e} (--dry-run downloads nothing)") from None
    console = wide_console()
    console.print(Syntax(cfg.to_yaml(), "yaml", theme="ansi_dark", background_color="default"))
    shape = (setup.data.in_channels, setup.data.image_size, setup.data.image_size)
    print_inspect(
        Target(setup.model, shape, f"{cfg.model.class_path or cfg.model.name} on {cfg.data.dataset}"), console
    )
    console.print(
        f"train/val/test: {len(setup.train):,}/{len(setup.val) if setup.val else 0:,}/{len(setup.test):,}   "
        f"device: {setup.device}"
    )
