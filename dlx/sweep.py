"""``dlx sweep``: many runs of one base experiment, as a grid, explicit variants, random samples and seeds.

A sweep file (YAML, read by dlx.config; validated here with pydantic, every problem one line):

    base: mnist_deep.yaml             # relative to the sweep file
    set: {train.epochs: 2}            # overrides for every cell (like --set)
    grid: {model.width: [0.5, 1, 2], model.depth: [1, 2]}
    variants:                         # optional: explicit points, crossed with the grid
      - {name: adam, optimizer.name: adam}
      - {name: sgd, optimizer.name: sgd, optimizer.lr: 0.05}
    random: {budget: 4, seed: 0, params: {optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}}
    seeds: [0, 1, 2]

Cells are the product grid x variants x random samples x seeds, named from their values
(``w2-d1-s0``), and land in ``<runs_dir>/<sweep>/<cell>/`` as ordinary run folders (experiment
name = sweep name, run id = cell name), with an index ``<runs_dir>/<sweep>/sweep.json``.

Execution: worker processes (``python -m dlx.sweep_worker``) train the cells; one per GPU (each sees
only its device) or, on CPU, ``--workers`` processes sharing the cores. A worker claims a cell by
locking its folder (runs.claim_cell), so two sweep processes never train one cell twice, and decides
from the cell's summary: completed -> skip, interrupted (or running with nobody holding the lock)
-> resume from checkpoints/last.pt, failed/diverged -> retrain only with ``--retry-failed``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from dlx.config import ExperimentConfig, apply_overrides, config_from_dict, format_errors, read_experiment, read_yaml
from dlx.errors import ConfigError, DlxError
from dlx.runs import (
    CONFIG_FILE,
    Run,
    claim_cell,
    reset_run,
    update_sweep_index,
)

SWEEPS_DIR = Path("experiments")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RESERVED_KEYS = ("name", "extends", "output.runs_dir")
BUSY_RETRY_S = 2.0  # how often a cell held by another sweep process is looked at again

# Short names for the keys people sweep most; any other key is named by its last part.
ABBREVIATIONS = {
    "model.width": "w",
    "model.depth": "d",
    "seed": "s",
    "optimizer.lr": "lr",
    "optimizer.weight_decay": "wd",
    "regularization.dropout": "drop",
    "regularization.batch_norm": "bn",
    "regularization.l1": "l1",
    "regularization.l2": "l2",
    "data.batch_size": "bs",
    "data.train_size": "n",
    "train.epochs": "ep",
    "model.name": "",  # names speak for themselves: "lenet5-w2"
    "optimizer.name": "",
    "schedule.name": "",
    "init.name": "",
    "data.dataset": "",
}


# ---------------------------------------------------------------------------- the sweep file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RandomParam(_Strict):
    """One sampled key: a range (``low``/``high``, optionally ``log`` and ``integer``) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> RandomParam:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices: give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError("log: needs low > 0")
        return self

    def sample(self, rng: random.Random) -> Any:
        if self.choices is not None:
            return copy.deepcopy(rng.choice(self.choices))
        assert self.low is not None and self.high is not None
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        # Four significant digits: the cell name shows exactly the value the config holds.
        return round(x) if self.integer else float(f"{x:.4g}")


class RandomSearch(_Strict):
    budget: int = Field(..., ge=1, description="how many configurations to sample")
    seed: int = 0
    params: dict[str, RandomParam] = Field(..., min_length=1)


class SweepSpec(_Strict):
    name: str | None = Field(None, pattern=NAME_PATTERN, max_length=100)
    base: str
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(default_factory=list)
    random: RandomSearch | None = None
    seeds: list[int] = Field(default_factory=list)
    workers: int | None = Field(None, ge=1, description="default number of worker processes")

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [key for key, values in grid.items() if not values]
        if empty:
            raise ValueError(" | ".join(f"grid.{key}: give at least one value" for key in empty))
        return grid

    @model_validator(mode="after")
    def _keys(self) -> SweepSpec:
        problems = []
        parts = {
            "set": list(self.set),
            "grid": list(self.grid),
            "variants": sorted({k for v in self.variants for k in v if k != "name"}),
            "random": list(self.random.params) if self.random else [],
        }
        for part, keys in parts.items():
            for key in keys:
                if key in RESERVED_KEYS:
                    problems.append(f"{part}: {key}: set by the sweep itself; remove it")
                if key == "seed" and self.seeds:
                    problems.append(f"{part}: seed: also given as seeds; keep one")
        swept = ("grid", "variants", "random")
        for a, b in itertools.combinations(swept, 2):
            for key in sorted(set(parts[a]) & set(parts[b])):
                problems.append(f"{b}: {key}: already swept in {a}; a key belongs to one of grid, variants, random")
        for i, variant in enumerate(self.variants):
            label = variant.get("name")
            if label is not None and not (isinstance(label, str) and re.match(NAME_PATTERN, label)):
                problems.append(f"variants: name: got {label!r} in variant {i + 1}; use letters, digits, '-', '_', '.'")
        if not (self.grid or self.variants or self.random or self.seeds):
            problems.append("grid: nothing to sweep; give grid, variants, random or seeds")
        if problems:
            raise ValueError(" | ".join(problems))
        return self


# ---------------------------------------------------------------------------- cells


@dataclass
class Cell:
    name: str
    values: dict[str, Any]  # the dotted keys this cell sets on top of the base (seed included)
    config: ExperimentConfig
    run_dir: Path
    parameters: int | None = None
    flops_per_image: int | None = None


@dataclass
class Sweep:
    name: str
    file: Path
    base: Path
    spec: SweepSpec
    runs_dir: Path
    cells: list[Cell]

    @property
    def folder(self) -> Path:
        return self.runs_dir / self.name


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "x".join(_format_value(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}{_format_value(v)}" for k, v in value.items())
    return str(value)


def abbreviations(keys: list[str]) -> dict[str, str]:
    """Key -> short name in cell names; keys whose short names would clash are spelled out."""
    short = {k: ABBREVIATIONS.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    counts = Counter(v for v in short.values() if v)
    return {k: (k.replace(".", "_") if v and counts[v] > 1 else v) for k, v in short.items()}


def _part(short: str, value: Any) -> str:
    text = _format_value(value)
    # "l2" + "0.01" would read as "l20.01": separate a digit-final key from a digit-first value.
    sep = "_" if short[-1:].isdigit() and text[:1].isdigit() else ""
    return f"{short}{sep}{text}"


def cell_name(parts: list[str]) -> str:
    """A valid folder name from name parts: ``["w2", "d1", "s0"]`` -> ``w2-d1-s0``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(p for p in parts if p)) or "base"
    if not name[0].isalnum():
        name = "c" + name
    if len(name) > 100:  # a folder name must stay short; a hash keeps it unique
        name = name[:91] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def expand(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    """Every cell of a sweep as (name, {dotted key: value}), in a stable order."""
    grid_points = [dict(zip(spec.grid, combo, strict=True)) for combo in itertools.product(*spec.grid.values())]
    variants = [(v.get("name"), {k: x for k, x in v.items() if k != "name"}) for v in spec.variants]
    samples: list[tuple[str | None, dict[str, Any]]] = []
    if spec.random is not None:
        rng = random.Random(spec.random.seed)
        for i in range(spec.random.budget):
            samples.append((f"r{i}", {key: p.sample(rng) for key, p in spec.random.params.items()}))
    seeds: list[int | None] = list(spec.seeds) or [None]

    keys = [*spec.grid, *(k for _, v in variants for k in v), *(k for _, v in samples for k in v), "seed"]
    short = abbreviations(list(dict.fromkeys(keys)))

    def parts(values: dict[str, Any]) -> list[str]:
        return [_part(short[k], v) for k, v in values.items()]

    cells = []
    for point, (vlabel, vvalues), (rlabel, rvalues), seed in itertools.product(
        grid_points or [{}], variants or [(None, {})], samples or [(None, {})], seeds
    ):
        names = parts(point)
        names += [vlabel] if vlabel else parts(vvalues)
        names += [rlabel, *parts(rvalues)] if rlabel else []
        values = {**point, **vvalues, **rvalues}
        if seed is not None:
            values["seed"] = seed
            names.append(_part(short["seed"], seed))
        cells.append((cell_name(names), values))
    return cells


def _assign(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b] = value`` for key ``a.b``, creating sections; a value in the way is an error."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise ValueError(f"{key!r} is not a dotted config key such as model.width")
    node = data
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"{key}: {p!r} is not a section (it holds {child!r})")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def resolve_sweep_file(name: str | Path) -> Path:
    """A sweep file path, or a name looked up as experiments/<name>.yaml."""
    path = Path(name)
    if path.is_file():
        return path
    tried = [path]
    if path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        for suffix in (".yaml", ".yml"):
            candidate = SWEEPS_DIR / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
            tried.append(candidate)
    raise DlxError(f"no sweep file {str(name)!r}: looked at {', '.join(str(p) for p in tried)}")


def _join_cells(names: list[str]) -> str:
    shown = ", ".join(names[:4])
    return (
        f"cell {shown}" if len(names) == 1 else f"cells {shown}" + (f" (+{len(names) - 4})" if len(names) > 4 else "")
    )


def _grouped(label: str, problems: list[tuple[str, str]]) -> list[str]:
    """(cell, problem) pairs -> one line per distinct problem, naming the cells it hits."""
    by_problem: dict[str, list[str]] = {}
    for cell, problem in problems:
        by_problem.setdefault(problem, []).append(cell)
    return [f"{label}: {_join_cells(cells)}: {problem}" for problem, cells in by_problem.items()]


def load_sweep(name: str | Path, overrides: list[str] | None = None, runs_dir: str | Path | None = None) -> Sweep:
    """Read and check a sweep file and every cell's config; ConfigError lists every problem."""
    file = resolve_sweep_file(name)
    label = str(file)
    try:
        spec = SweepSpec.model_validate(read_yaml(file, label))
    except ValidationError as e:
        raise ConfigError(format_errors(e, label, SweepSpec)) from None
    base_path = Path(spec.base) if Path(spec.base).is_absolute() else file.parent / spec.base
    if not base_path.is_file():
        raise ConfigError([f"{label}: base: file not found: {base_path}"])
    base = read_experiment(base_path)
    problems = []
    for key, value in spec.set.items():
        try:
            _assign(base, key, value)
        except ValueError as e:
            problems.append(f"{label}: set: {e}")
    if problems:
        raise ConfigError(problems)
    base = apply_overrides(base, overrides or [])
    sweep_name = spec.name or file.stem
    if not re.match(NAME_PATTERN, sweep_name):
        raise ConfigError([f"{label}: name: {sweep_name!r} is not a valid folder name; set name: in the sweep file"])
    output = base.get("output") if isinstance(base.get("output"), dict) else {}
    root = Path(runs_dir if runs_dir is not None else output.get("runs_dir", "runs"))

    cells: list[Cell] = []
    seen: dict[str, dict[str, Any]] = {}
    cell_problems: list[tuple[str, str]] = []
    marker = "\x00"
    for cname, values in expand(spec):
        if cname in seen:
            raise ConfigError([f"{label}: two cells are both named {cname!r} ({seen[cname]} and {values}); "
                               f"make the variants differ or give them names"])  # fmt: skip
        seen[cname] = values
        data = copy.deepcopy(base)
        try:
            for key, value in values.items():
                _assign(data, key, value)
        except ValueError as e:
            cell_problems.append((cname, str(e)))
            continue
        data["name"] = sweep_name
        if not isinstance(data.get("output"), dict):
            data["output"] = {}
        data["output"]["runs_dir"] = str(root)
        try:
            cfg = config_from_dict(data, marker)
        except ConfigError as e:
            cell_problems += [(cname, p.removeprefix(f"{marker}: ")) for p in e.problems]
            continue
        cells.append(Cell(cname, values, cfg, root / sweep_name / cname))
    if cell_problems:
        raise ConfigError(_grouped(label, cell_problems))
    return Sweep(sweep_name, file, base_path, spec, root, cells)


# ---------------------------------------------------------------------------- checks before running


def inspect_cells(sweep: Sweep) -> None:
    """Build every cell's model (CPU, no training) for its parameters and FLOPs; ConfigError if any cannot be.

    This is ``train.prepare`` without moving data or loading transfer weights: a width that makes a
    model impossible, a validation split larger than the data, an unknown device are all reported
    before anything runs. (A run's summary has the final figures, e.g. after a transfer head swap.)
    """
    import torch

    from dlx.data.datasets import load_dataset
    from dlx.init import initialize
    from dlx.modelinfo import count_parameters, flops_per_image
    from dlx.models.custom import build_from_config
    from dlx.train import resolve_device, split_data

    datasets: dict[tuple[str, str | None], Any] = {}
    problems: list[tuple[str, str]] = []
    for cell in sweep.cells:
        cfg = cell.config
        try:
            resolve_device(cfg.train.device)
            key = (cfg.data.dataset, cfg.data.data_dir)
            if key not in datasets:
                datasets[key] = load_dataset(cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download)
            data = datasets[key]
            split_data(data, cfg)
            torch.manual_seed(cfg.seed)
            model = build_from_config(
                cfg.model,
                in_channels=data.in_channels,
                num_classes=data.num_classes,
                image_size=data.image_size,
                dropout=cfg.regularization.dropout,
                batch_norm=cfg.regularization.batch_norm,
            )
            try:
                initialize(model, cfg.init.name, bias=cfg.init.bias, args=cfg.init.args)
            except (TypeError, ValueError) as e:
                raise DlxError(f"init: initializer {cfg.init.name!r} failed: {e}") from None
        except DlxError as e:
            problems.append((cell.name, str(e)))
            continue
        cell.parameters = count_parameters(model)
        cell.flops_per_image = flops_per_image(model, (data.in_channels, data.image_size, data.image_size))
    if problems:
        raise ConfigError(_grouped(str(sweep.file), problems))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


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
        stored.pop("output", None)
        expected = cell.config.to_dict()
        expected.pop("output", None)
        a, b = _flatten(stored), _flatten(expected)
        diffs = [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in sorted({*a, *b})
                 if a.get(k) != b.get(k)]  # fmt: skip
        if diffs:
            more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
            problems.append(
                f"{cell.run_dir}: made from a different config ({'; '.join(diffs[:3])}{more}); "
                f"give the sweep another name: or remove the folder"
            )
    if problems:
        raise ConfigError(problems)


def _held_elsewhere(path: Path) -> bool:
    """Whether another process holds the cell's lock right now (a peek: taken and given back at once)."""
    if not path.is_dir():
        return False
    run = Run(path)
    if run.try_acquire():
        run.release()
        return False
    return True


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        return Run(path).read_summary()
    except DlxError:
        return {}


# ---------------------------------------------------------------------------- one cell (inside a worker)


def _fail_before_fit(run: Run, cfg: ExperimentConfig, previous: dict[str, Any], message: str) -> dict[str, Any]:
    """Record a cell that could not even start (dataset missing, ...) so compare lists it as failed."""
    if not run.config_path.exists():
        run.write_config(cfg.to_yaml())
    summary = {**previous, "status": "failed", "name": cfg.name, "run_id": run.path.name, "run_dir": str(run.path),
               "message": message}  # fmt: skip
    run.write_summary(summary)
    return summary


def run_cell(run_dir: str | Path, config: dict[str, Any], *, retry_failed: bool = False) -> dict[str, Any]:
    """Claim one cell and do what its state asks; returns ``{"outcome", "status", "message", ...}``.

    outcome: ``busy`` (another process holds it), ``skipped`` (completed, or failed without
    retry_failed), ``trained``, ``resumed``. KeyboardInterrupt propagates after the run is marked
    interrupted (fit does that), so the worker can report and stop.
    """
    run = claim_cell(run_dir)
    if run is None:
        return {"outcome": "busy", "status": None, "message": "held by another dlx process"}
    try:
        try:
            previous = run.read_summary()
        except DlxError:
            previous = {}  # a corrupt summary: the cell starts over
        status = previous.get("status")
        if status == "completed":
            return {"outcome": "skipped", "status": status, "message": "completed earlier"}
        if status in ("failed", "diverged") and not retry_failed:
            return {"outcome": "skipped", "status": status, "message": previous.get("message", "")}
        cfg = config_from_dict(config, str(run.path / CONFIG_FILE))
        from dlx.train import fit, prepare

        try:
            setup = prepare(cfg)
        except DlxError as e:
            _fail_before_fit(run, cfg, previous, str(e))
            return {"outcome": "trained", "status": "failed", "message": str(e)}
        # "running" with the lock free means the process that ran it died: continue like an interrupted run.
        resume = status in ("interrupted", "running") and run.last_checkpoint.exists()
        from_epoch = int(previous.get("epochs_completed") or 0) if resume else 0
        if not resume:
            reset_run(run)
        try:
            summary = fit(setup, run, resume=resume, quiet=True)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # fit has marked the run failed or diverged; the sweep goes on
            summary = _read_summary(run.path)
            summary.setdefault("status", "failed")
            summary.setdefault("message", f"{type(e).__name__}: {e}")
        return {
            "outcome": "resumed" if resume else "trained",
            "status": summary.get("status"),
            "message": summary.get("message", ""),
            "from_epoch": from_epoch,
        }
    finally:
        run.release()


# ---------------------------------------------------------------------------- worker processes


class WorkerDied(Exception):
    pass


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


@dataclass
class Plan:
    """How cells are spread over processes."""

    workers: int
    threads: int  # torch CPU threads per worker
    gpus: list[str]  # one device per worker slot (round robin); empty on CPU

    def describe(self) -> str:
        each = f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} each"
        where = f"GPUs {', '.join(self.gpus)}" if self.gpus else "CPU"
        return f"{self.workers} worker{'s' if self.workers != 1 else ''} on {where}, {each}"

    def env(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        t = str(self.threads)
        # OpenMP/MKL read these at start: with W workers each gets cores/W threads, never more (no oversubscription).
        env.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, DLX_SWEEP_THREADS=t, PYTHONUNBUFFERED="1")
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]  # the worker sees only its GPU
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env


def plan_workers(sweep: Sweep, workers: int | None) -> Plan:
    """One worker per GPU when cells may use CUDA; on CPU ``workers`` processes (default 1) sharing the cores."""
    devices = {c.config.train.device for c in sweep.cells}
    gpus = visible_gpus() if devices <= {"auto", "cuda"} else []
    n = workers or sweep.spec.workers or (len(gpus) if gpus else 1)
    n = max(1, min(n, len(sweep.cells)))
    return Plan(workers=n, threads=max(1, cpu_count() // n), gpus=gpus)


class WorkerProcess:
    """A ``python -m dlx.sweep_worker`` child: JSON tasks on its stdin, JSON results on its stdout."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        # Own session: a Ctrl-C in the terminal reaches only the sweep, which forwards exactly one SIGINT.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dlx.sweep_worker"],
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
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
            tail = f": {lines[-1][:200]}" if lines else ""
        except OSError:
            pass
        return f"worker process exited with code {code}{tail} (log: {self.log_path})"

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


# ---------------------------------------------------------------------------- scheduling and display


FINAL = ("completed", "failed", "diverged", "interrupted")


@dataclass
class CellState:
    cell: Cell
    state: str = "pending"  # pending | running | elsewhere | completed | failed | diverged | interrupted
    note: str = ""
    worker: int | None = None
    started: float | None = None
    ended: float | None = None
    from_epoch: int = 0
    trained_here: bool = False
    was_elsewhere: bool = False  # another process held it at some point
    summary: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """Hands out cells; a cell held by another process comes back after a pause until it can be decided."""

    def __init__(self, states: list[CellState]) -> None:
        self._cond = threading.Condition()
        self._ready = deque(states)
        self._later: list[tuple[float, CellState]] = []
        self.stopping = False

    def next(self) -> CellState | None:
        with self._cond:
            while not self.stopping:
                now = time.monotonic()
                due = [item for item in self._later if item[0] <= now]
                self._later = [item for item in self._later if item[0] > now]
                self._ready.extend(state for _, state in due)
                if self._ready:
                    return self._ready.popleft()
                if not self._later:
                    return None
                self._cond.wait(timeout=min(t for t, _ in self._later) - now)
            return None

    def later(self, state: CellState, delay: float) -> None:
        with self._cond:
            self._later.append((time.monotonic() + delay, state))
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()


def default_console() -> Console:
    console = Console(highlight=False)
    # A file or a pipe has no width: lines and tables are not squeezed into 80 columns there.
    return console if console.is_terminal else Console(highlight=False, width=200, soft_wrap=True)


def _pct(x: Any) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class SweepRunner:
    def __init__(self, sweep: Sweep, plan: Plan, *, retry_failed: bool, console: Console) -> None:
        self.sweep = sweep
        self.plan = plan
        self.retry_failed = retry_failed
        self.console = console
        self.live = console.is_terminal
        self.states = [CellState(cell) for cell in sweep.cells]
        self.lock = threading.Lock()
        self.scheduler: Scheduler | None = None
        self.workers: list[WorkerProcess | None] = [None] * plan.workers
        self.busy = [False] * plan.workers
        self.started = time.monotonic()
        self.interrupted = False

    # --- the index
    def write_index(self) -> dict[str, Any]:
        sweep = self.sweep

        def build() -> dict[str, Any]:
            cells = []
            for cell in sweep.cells:
                s = _read_summary(cell.run_dir)
                cells.append({
                    "name": cell.name,
                    "values": cell.values,
                    "run_dir": str(cell.run_dir),
                    "status": s.get("status", "pending"),
                    # A run's own figures win: they count the model as trained (e.g. a replaced head).
                    "parameters": s.get("parameters", cell.parameters),
                    "flops_per_image": s.get("flops_per_image", cell.flops_per_image),
                    "epochs": cell.config.train.epochs,
                    "epochs_completed": s.get("epochs_completed", 0),
                    "best_val_acc": s.get("best_val_acc"),
                    "test_acc": s.get("test_acc"),
                    "wall_seconds": s.get("wall_seconds"),
                    "diagnosis": (s.get("diagnosis") or {}).get("verdict"),
                    "message": s.get("message", ""),
                })  # fmt: skip
            spec = sweep.spec.model_dump(mode="json", exclude_none=True)
            return {
                "name": sweep.name,
                "sweep_file": str(sweep.file),
                "base": str(sweep.base),
                **{k: spec[k] for k in ("set", "grid", "variants", "random", "seeds") if k in spec},
                "runs_dir": str(sweep.runs_dir),
                "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "counts": dict(Counter(c["status"] for c in cells)),
                "cells": cells,
            }

        return update_sweep_index(sweep.folder, build)

    # --- what happened to a cell
    def _finish(self, st: CellState, reply: dict[str, Any]) -> None:
        outcome, status = reply.get("outcome"), reply.get("status")
        with self.lock:
            st.ended = time.monotonic()
            st.summary = _read_summary(st.cell.run_dir)
            if outcome == "busy":
                st.state, st.note, st.was_elsewhere = "elsewhere", "running in another process", True
                return
            st.state = status if status in FINAL else "failed"
            message = reply.get("message") or ""
            if outcome == "skipped":
                if status == "completed":
                    st.note = "completed by another process" if st.was_elsewhere else "completed earlier"
                else:
                    st.note = f"{status} earlier, not retried (--retry-failed retries it)"
            else:
                st.trained_here = True
                st.from_epoch = int(reply.get("from_epoch") or 0)
                verb = f"resumed from epoch {st.from_epoch}" if outcome == "resumed" else "trained"
                if status == "interrupted":
                    message = "re-run the sweep to resume it"
                st.note = verb if status == "completed" else f"{verb}; {message}"
        self.write_index()
        if not self.live:
            self._print_line(st)

    def _print_line(self, st: CellState) -> None:
        with self.lock:
            done = sum(s.state in FINAL for s in self.states)
            s = st.summary
            line = f"[{done}/{len(self.states)}] {st.cell.name}: {st.state}"
            if st.trained_here and st.started is not None and st.ended is not None:
                line += f" in {_duration(st.ended - st.started)}"
            if st.state == "completed":
                line += f" (val {_pct(s.get('best_val_acc'))}, test {_pct(s.get('test_acc'))})"
            line += f" - {st.note}" if st.note else ""
        self.console.print(line, markup=False, highlight=False)

    # --- worker slots
    def _slot(self, index: int) -> None:
        assert self.scheduler is not None
        log = self.sweep.folder / ".logs" / f"worker-{index}.log"
        while (st := self.scheduler.next()) is not None:
            if st.state == "elsewhere" and _held_elsewhere(st.cell.run_dir):
                self.scheduler.later(st, BUSY_RETRY_S)  # still in training there: look again later
                continue
            if self.workers[index] is None:
                self.workers[index] = WorkerProcess(self.plan.env(index), log)
            worker = self.workers[index]
            assert worker is not None
            with contextlib.suppress(WorkerDied):  # call() below reports it for this cell
                worker.wait_ready()
            if self.scheduler.stopping:
                break  # Ctrl-C while the worker was starting: the cell stays pending
            with self.lock:
                st.state, st.started, st.worker = "running", time.monotonic(), index
                self.busy[index] = True
            task = {"cell": st.cell.name, "run_dir": str(st.cell.run_dir), "config": st.cell.config.to_dict(),
                    "retry_failed": self.retry_failed}  # fmt: skip
            try:
                reply = worker.call(task)
            except WorkerDied as e:
                self.workers[index] = None
                worker.close(timeout=5)
                stopped = self.scheduler.stopping
                reply = {"outcome": "trained", "status": "interrupted" if stopped else "failed", "message": str(e)}
            finally:
                with self.lock:
                    self.busy[index] = False
            self._finish(st, reply)
            if reply.get("outcome") == "busy":
                self.scheduler.later(st, BUSY_RETRY_S)
        worker = self.workers[index]
        if worker is not None:
            worker.close()
            self.workers[index] = None

    def stop_workers(self) -> None:
        for i, worker in enumerate(self.workers):
            if worker is not None:
                worker.close(timeout=10)
                self.workers[i] = None

    def interrupt(self) -> None:
        """Ctrl-C: stop handing out cells, interrupt the cells in training (they save an interrupted run)."""
        self.interrupted = True
        if self.scheduler is not None:
            self.scheduler.stop()
        with self.lock:
            for i, worker in enumerate(self.workers):
                if worker is not None and self.busy[i]:
                    worker.interrupt()

    # --- display
    def _progress(self, st: CellState) -> tuple[int, float | None]:
        """Epochs done and the last validation accuracy, from the cell's metrics.jsonl."""
        try:
            rows = Run(st.cell.run_dir).read_metrics()
        except (OSError, ValueError):
            return 0, None
        accs = [r.get("val_acc") for r in rows if r.get("val_acc") is not None]
        return len(rows), (accs[-1] if accs else None)

    def eta(self) -> float | None:
        """Seconds left: epochs left times the seconds per epoch seen so far, over the workers."""
        spent, epochs_done, left = 0.0, 0, 0
        now = time.monotonic()
        for st in self.states:
            total = st.cell.config.train.epochs
            if st.state == "running" and st.started is not None:
                done, _ = self._progress(st)
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
        table = Table(title=f"sweep {self.sweep.name}", title_justify="left", expand=False)
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
        style = {"completed": "green", "failed": "red", "diverged": "red", "interrupted": "yellow",
                 "running": "cyan", "elsewhere": "magenta", "pending": "dim"}  # fmt: skip
        for st in states:
            total = st.cell.config.train.epochs
            done, val = self._progress(st) if st.state in ("running", "elsewhere") else (0, None)
            if st.state in FINAL:
                done = int(st.summary.get("epochs_completed") or 0)
                val = st.summary.get("best_val_acc")
            bar = Table.grid(padding=(0, 1))
            bar.add_row(ProgressBar(total=total, completed=min(done, total), width=10), f"{done}/{total}")
            state: RenderableType = Text(st.state, style=style.get(st.state, ""))
            if st.state == "running":
                state = Spinner("dots", text=Text("running", style="cyan"))
            elapsed = (st.ended if st.state in FINAL and st.ended else now) - st.started if st.started else None
            table.add_row(st.cell.name, state, bar, _pct(val), _pct(st.summary.get("test_acc")),
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

    # --- the whole thing
    def run(self) -> list[CellState]:
        for st in self.states:
            s = _read_summary(st.cell.run_dir)
            st.summary = s
            status = s.get("status")
            # Final states decided from disk right away; the worker re-checks under the cell's lock anyway.
            if status == "completed":
                st.state, st.note = "completed", "completed earlier"
            elif status in ("failed", "diverged") and not self.retry_failed:
                st.state, st.note = status, f"{status} earlier, not retried (--retry-failed retries it)"
        todo = [st for st in self.states if st.state == "pending"]
        earlier = len(self.states) - len(todo)
        if not self.live:
            self.console.print(
                f"sweep {self.sweep.name}: {len(self.states)} cells in {self.sweep.folder} "
                f"({earlier} already decided, {len(todo)} to do); {self.plan.describe()}",
                markup=False,
                highlight=False,
            )
        self.scheduler = Scheduler(todo)
        threads = [threading.Thread(target=self._slot, args=(i,), daemon=True) for i in range(self.plan.workers)]
        for t in threads:
            t.start()
        live = Live(self.render(), console=self.console, refresh_per_second=4) if self.live else nullcontext()
        try:
            with live:
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=0.25)
                    if isinstance(live, Live):
                        live.update(self.render())
        except KeyboardInterrupt:
            self.interrupt()
            for t in threads:
                t.join()  # each cell in training saves itself as interrupted
        finally:
            self.stop_workers()
            self.write_index()
        return self.states


@dataclass
class SweepResult:
    states: list[CellState]
    index: Path
    interrupted: bool

    @property
    def ok(self) -> bool:
        return all(st.state == "completed" for st in self.states)


def run_sweep(
    sweep: Sweep, *, workers: int | None = None, retry_failed: bool = False, console: Console | None = None
) -> SweepResult:
    """Check every cell, then train the ones not done yet in worker processes; resumable and idempotent."""
    console = console or default_console()
    check_existing(sweep)
    plan = plan_workers(sweep, workers)
    runner = SweepRunner(sweep, plan, retry_failed=retry_failed, console=console)
    todo = any(_read_summary(c.run_dir).get("status") != "completed" for c in sweep.cells)
    if todo:  # nothing to train: no model checks (the index takes its figures from the summaries)
        inspect_cells(sweep)  # before anything is written: a bad cell leaves no trace
    runner.write_index()
    states = runner.run()
    counts = Counter(st.state for st in states)
    summary = ", ".join(f"{n} {state}" for state, n in counts.most_common())
    console.print(
        f"sweep {sweep.name}: {summary}; index {sweep.folder / 'sweep.json'}; compare with: dlx compare {sweep.folder}",
        markup=False,
        highlight=False,
    )
    if runner.interrupted:
        raise KeyboardInterrupt
    return SweepResult(states, sweep.folder / "sweep.json", runner.interrupted)


def show_plan(sweep: Sweep, workers: int | None = None, console: Console | None = None) -> None:
    """--dry-run: every cell with its settings, parameters, FLOPs and current state; nothing is written."""
    console = console or default_console()
    inspect_cells(sweep)
    check_existing(sweep)
    table = Table(title=f"sweep {sweep.name}: {len(sweep.cells)} runs -> {sweep.folder}", title_justify="left")
    for col in ("cell", "settings", "parameters", "MFLOPs/image", "state"):
        table.add_column(col, justify="right" if col in ("parameters", "MFLOPs/image") else "left")
    for cell in sweep.cells:
        settings = " ".join(f"{k}={_format_value(v)}" for k, v in cell.values.items())
        state = _read_summary(cell.run_dir).get("status", "pending")
        flops = f"{cell.flops_per_image / 1e6:,.2f}" if cell.flops_per_image is not None else "-"
        table.add_row(cell.name, settings, f"{cell.parameters:,}", flops, state)
    console.print(table)
    plan = plan_workers(sweep, workers)
    epochs = sum(c.config.train.epochs for c in sweep.cells)
    console.print(f"base {sweep.base}; {epochs} epochs in all; {plan.describe()}", markup=False, highlight=False)
