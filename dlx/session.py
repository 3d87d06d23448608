"""The steps of a ``dlx train`` invocation: validate and build, then claim a run folder, then fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.config import ExperimentConfig, config_from_dict
from dlx.errors import DlxError
from dlx.runs import Run, create_run, open_run


def start_run(
    cfg: ExperimentConfig,
    *,
    runs_dir: str | Path | None = None,
    run_id: str | None = None,
    quiet: bool = False,
    run: Run | None = None,
) -> dict[str, Any]:
    """Build everything first (errors leave nothing behind), then create the run folder and train."""
    from dlx.train import fit, prepare

    setup = prepare(cfg)
    if run is None:
        run = create_run(runs_dir if runs_dir is not None else cfg.output.runs_dir, cfg.name, run_id)
    run.acquire()
    try:
        return fit(setup, run, quiet=quiet)
    finally:
        run.release()


def load_run_config(run: Run) -> ExperimentConfig:
    import yaml

    try:
        data = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DlxError(f"{run.config_path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise DlxError(f"{run.config_path}: not a dlx config")
    return config_from_dict(data, str(run.config_path))


def resume_run(path: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Continue a run from checkpoints/last.pt; a completed run is reported, not retrained."""
    from dlx.train import fit, prepare

    run = open_run(path)
    summary = run.read_summary()
    if summary.get("status") == "completed":
        raise DlxError(f"{run.path} is already completed (test accuracy {summary.get('test_acc')}); nothing to resume")
    cfg = load_run_config(run)
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
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.table import Table

    from dlx.modelinfo import layer_table
    from dlx.train import prepare

    setup = prepare(cfg)
    console = Console()
    console.print(Syntax(cfg.to_yaml(), "yaml", theme="ansi_dark", background_color="default"))
    shape = (setup.data.in_channels, setup.data.image_size, setup.data.image_size)
    table = Table(title=f"{cfg.model.name} on {'x'.join(map(str, shape))} input")
    for col in ("layer", "type", "output shape", "parameters"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for row in layer_table(setup.model, shape):
        table.add_row(row.name, row.kind, "x".join(map(str, row.output_shape)), f"{row.parameters:,}")
    console.print(table)
    console.print(
        f"parameters: {setup.parameters:,}   FLOPs/image: {setup.flops_per_image:,}   "
        f"train/val/test: {len(setup.train):,}/{len(setup.val) if setup.val else 0:,}/{len(setup.test):,}   "
        f"device: {setup.device}"
    )
