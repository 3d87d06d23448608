"""Checks on a sweep's cells before anything runs, and peeks at a cell folder's state on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.config import config_differences, read_yaml
from dlx.errors import ConfigError, DlxError
from dlx.runs import CONFIG_FILE, Run
from dlx.sweep.spec import Sweep, grouped


def inspect_cells(sweep: Sweep) -> None:
    """Build every cell's model (CPU, no training) for its parameters and FLOPs; ConfigError if any cannot be.

    This is ``build.prepare`` without moving data or loading transfer weights: a width that makes a
    model impossible, a validation split larger than the data, an unknown device are all reported
    before anything runs. (A run's summary has the final figures, e.g. after a transfer head swap.)
    """
    from dlx.build import build_initialized_model, check_loggers, check_training, split_data
    from dlx.data.datasets import data_identity, load_data
    from dlx.devices import resolve_device
    from dlx.modelinfo import count_parameters, flops_per_image
    from dlx.sweep.pool import gpus_needed, sweep_gpus

    datasets: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    gpus = sweep_gpus(sweep)
    for cell in sweep.cells:
        cfg = cell.config
        need = gpus_needed(cfg, gpus)
        if need > len(gpus):
            problems.append((cell.name, f"train.devices: {need} GPUs asked, but the sweep has {len(gpus)} "
                                        f"(GPUs {', '.join(gpus)}; CUDA_VISIBLE_DEVICES); at most {len(gpus)}"))  # fmt: skip
            continue
        try:
            resolve_device(cfg.train.device)
            check_loggers(cfg)
            key = data_identity(cfg.data)
            if key not in datasets:
                datasets[key] = load_data(cfg.data)
            data = datasets[key]
            train, _, _ = split_data(data, cfg)
            model = build_initialized_model(cfg, data)
            check_training(cfg, data, train, model)  # optimizer, schedule, augmentation: what fit will build
        except ConfigError as e:
            problems += [(cell.name, p.removeprefix(f"{cfg.name}: ")) for p in e.problems]
            continue
        except DlxError as e:
            problems.append((cell.name, str(e)))
            continue
        cell.parameters = count_parameters(model)
        cell.flops_per_image = flops_per_image(model, (data.in_channels, data.image_size, data.image_size))
    if problems:
        raise ConfigError(grouped(str(sweep.file), problems))


def check_existing(sweep: Sweep) -> None:
    """A cell folder made from a different config (the sweep file changed) is an error, never silently reused."""
    problems = []
    for cell in sweep.cells:
        path = cell.run_dir / CONFIG_FILE
        if not path.is_file():
            continue
        try:
            stored = read_yaml(path)
        except ConfigError:
            continue  # unreadable: the worker retrains the cell from scratch
        diffs = config_differences(stored, cell.config.to_dict())  # output.* may differ
        if diffs:
            more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
            problems.append(
                f"{cell.run_dir}: made from a different config ({'; '.join(diffs[:3])}{more}); "
                f"give the sweep another name: or remove the folder"
            )
    if problems:
        raise ConfigError(problems)


def held_elsewhere(path: Path) -> bool:
    """Whether another process holds the cell's lock right now (a peek: taken and given back at once)."""
    if not path.is_dir():
        return False
    run = Run(path)
    if run.try_acquire():
        run.release()
        return False
    return True


RETRIED = ("failed", "diverged", "broken")  # final states --retry-failed trains again


def has_results(path: Path) -> bool:
    """Whether a cell folder holds anything a retrain would destroy: checkpoints or metrics."""
    run = Run(path)
    return any(p.is_file() for p in (run.best_checkpoint, run.last_checkpoint, run.metrics_path))


def read_summary(path: Path) -> dict[str, Any]:
    """A cell's summary.json; ``{}`` if there is none (or an unreadable one guarding nothing); for an unreadable
    one next to checkpoints or metrics, ``{"status": "broken", "message": why}``: never silently retrained."""
    try:
        return Run(path).read_summary()
    except DlxError as e:
        if not has_results(path):
            return {}
        return {"status": "broken", "message": f"{e}; checkpoints and metrics kept (--retry-failed moves the "
                                               f"folder aside and trains the cell again)"}  # fmt: skip
