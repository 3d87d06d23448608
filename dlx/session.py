"""The steps of a ``dlx train`` invocation: validate and build, then claim a run folder, then fit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dlx.config import ExperimentConfig, config_differences, load_run_config
from dlx.errors import DlxError, SharedError
from dlx.runs import Run, check_run_id, create_run, open_run


def start_run(
    cfg: ExperimentConfig,
    *,
    runs_dir: str | Path | None = None,
    run_id: str | None = None,
    quiet: bool = False,
    run: Run | None = None,
) -> dict[str, Any]:
    """Build everything first (errors leave nothing behind), then create the run folder and train.

    Under a launcher (torchrun) this process joins the run's process group; with train.devices > 1 it starts
    that many processes itself (dlx.launch); otherwise it trains alone.
    """
    from dlx.build import prepare
    from dlx.distributed import from_environment
    from dlx.group import check_launcher, train_in_group
    from dlx.launch import launch, processes_for
    from dlx.train import fit

    if run_id is not None:
        check_run_id(run_id)  # before the data and the model are built: a typo costs nothing
    world = from_environment()
    if world is not None and world.distributed:
        check_launcher(cfg, world)
        return train_in_group(world, cfg, run_path=run.path if run else None, runs_dir=runs_dir, run_id=run_id,
                              claimed=run is not None, quiet=quiet)  # fmt: skip
    processes = processes_for(cfg)
    if processes > 1:
        return launch(cfg, processes, run=run, runs_dir=runs_dir, run_id=run_id, quiet=quiet)
    setup = prepare(cfg)
    created = run is None
    if run is None:
        run = create_run(runs_dir if runs_dir is not None else cfg.output.runs_dir, cfg.name, run_id)
    run.acquire()
    try:
        return fit(setup, run, quiet=quiet)
    except BaseException:
        if created and not run.config_path.exists():  # failed before its first write (disk full): no husk left
            run.release()
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finally:
        run.release()


def resume_run(
    path: str | Path, *, quiet: bool = False, devices: int | str | None = None, changes: list[str] | None = None
) -> dict[str, Any]:
    """Continue a run from checkpoints/last.pt; a completed run is reported, not retrained.

    ``devices`` (--devices): how many processes continue it, whatever number trained it so far. ``changes``
    (--set): only ``train.epochs=N``, more than the run has trained: a finished or interrupted run is extended.
    """
    from dlx.build import prepare
    from dlx.distributed import from_environment
    from dlx.group import check_launcher, train_in_group
    from dlx.launch import launch, processes_for
    from dlx.train import fit

    run = open_run(path)
    summary = run.read_summary()
    world = from_environment()
    cfg = load_run_config(run.config_path)
    if changes:
        if world is not None and world.distributed:
            raise DlxError("--resume with --set under torchrun: extend the run once with dlx's own launcher "
                           "(dlx train --resume RUN --set train.epochs=N --devices K)")  # fmt: skip
        cfg = extend(run, cfg, summary, changes)
    elif summary.get("status") == "completed" and not unfinished_extension(summary, cfg):
        raise DlxError(f"{run.path} is already completed (test accuracy {summary.get('test_acc')}); nothing to "
                       "resume (train it longer with: --set train.epochs=N)")  # fmt: skip
    if world is not None and world.distributed:
        check_launcher(cfg, world, devices if devices is not None else 1)  # the run's own devices bind nothing here
        if run.last_checkpoint.exists():  # every rank reads the run folder to resume (a shared file system)
            try:
                check_unchanged(run, cfg)
            except DlxError as e:
                raise SharedError(str(e)) from None
        return train_in_group(world, cfg, run_path=run.path, resume=True, quiet=quiet)
    if run.last_checkpoint.exists():
        check_unchanged(run, cfg)
    processes = processes_for(cfg, devices)
    if processes > 1:
        return launch(cfg, processes, run=run, resume=True, quiet=quiet)
    setup = prepare(cfg)
    run.acquire()
    try:
        if not run.last_checkpoint.exists():
            # Stopped before the first epoch ended: start over inside the same folder.
            return fit(setup, run, quiet=quiet)
        return fit(setup, run, resume=True, quiet=quiet)
    finally:
        run.release()


def unfinished_extension(summary: dict[str, Any], cfg: ExperimentConfig) -> bool:
    """A completed run whose --set train.epochs=N extension stopped before it trained those epochs."""
    extending = summary.get("extending") or {}
    return extending.get("to") == cfg.train.epochs > int(summary.get("epochs_completed") or 0)


def extend(run: Run, cfg: ExperimentConfig, summary: dict[str, Any], changes: list[str]) -> ExperimentConfig:
    """The run's config with more epochs, written to its config.yaml before training goes on."""
    from dlx.config import apply_overrides, config_from_dict, parse_override

    keys = [".".join(parse_override(c)[0]) for c in changes]
    other = [k for k in keys if k != "train.epochs"]
    if other:
        raise DlxError(f"--resume --set {other[0]}: only train.epochs can change on a resume (the rest is what the "
                       "run's checkpoint trained with); start a new run for other settings")  # fmt: skip
    extended = config_from_dict(apply_overrides(cfg.to_dict(), changes), f"--resume {run.path}")
    done = int(summary.get("epochs_completed") or 0)
    if extended.train.epochs <= done:
        raise DlxError(f"--set train.epochs={extended.train.epochs}: {run.path} has trained {done} epochs already; "
                       "give more to extend it")  # fmt: skip
    # Said in summary.json first: a plain --resume of this extension interrupted before its first checkpoint
    # continues it, while a config.yaml edited by hand stays an error (check_unchanged).
    run.write_summary({**summary, "extending": {"from": cfg.train.epochs, "to": extended.train.epochs}})
    run.write_config(extended.to_yaml())
    return extended


def check_unchanged(run: Run, cfg: ExperimentConfig) -> None:
    """A resume continues the run last.pt holds: a config.yaml edited since is an error listing what changed.

    More epochs that --resume --set train.epochs=N asked for (summary.json: extending) is not a change.
    """
    from dlx.checkpoint import load_checkpoint

    stored = load_checkpoint(run.last_checkpoint).get("config")
    if not isinstance(stored, dict):
        raise DlxError(f"--resume {run.path}: {run.last_checkpoint} holds no config; not a dlx last.pt")
    changed = config_differences(stored, cfg.to_dict())
    extending = run.read_summary().get("extending") or {}
    if extending.get("to") == cfg.train.epochs:
        changed = [c for c in changed if not c.startswith("train.epochs:")]
    if changed:
        more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
        raise DlxError(
            f"--resume {run.path}: {run.config_path.name} differs from the config the run was trained with "
            f"({'; '.join(changed[:4])}{more}); put it back, or start a new run"
        )


def dry_run(cfg: ExperimentConfig) -> None:
    """Print the resolved config and a model summary (layers, output shapes, parameters); write nothing."""
    from rich.syntax import Syntax

    from dlx.build import prepare
    from dlx.console import wide_console
    from dlx.data.datasets import DatasetUnavailable
    from dlx.inspect import Target, print_inspect

    try:
        setup = prepare(cfg, download=False)  # a dry run writes nothing: no data folder, no download
    except DatasetUnavailable as e:
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
