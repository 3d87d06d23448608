"""The sweep file and its cells: schema, cell names, ``load_sweep``.

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
(``w2-d1-s0``); each cell is a full ExperimentConfig with its own run folder.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlx.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    format_errors,
    read_experiment,
    read_yaml,
    set_dotted,
)
from dlx.errors import ConfigError, DlxError
from dlx.outputs import check_output_folder

SWEEPS_DIR = Path("experiments")
# pydantic's pattern= (Rust regex) and re.fullmatch: with re.match, ``$`` would let a trailing newline through.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RESERVED_KEYS = ("name", "extends", "output.runs_dir")

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
            if label is not None and not (isinstance(label, str) and re.fullmatch(NAME_PATTERN, label)):
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


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "x".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}{format_value(v)}" for k, v in value.items())
    return str(value)


def abbreviations(keys: list[str]) -> dict[str, str]:
    """Key -> short name in cell names; keys whose short names would clash are spelled out."""
    short = {k: ABBREVIATIONS.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    counts = Counter(v for v in short.values() if v)
    return {k: (k.replace(".", "_") if v and counts[v] > 1 else v) for k, v in short.items()}


def name_part(short: str, value: Any) -> str:
    text = format_value(value)
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


MAX_CELLS = 10_000  # a sweep past this is a typo (a budget of 1e9), not a plan: refused before expanding


def cell_count(spec: SweepSpec) -> tuple[int, str]:
    """How many cells the sweep has, and the product that gives it (``grid 3 x 2 x seeds 3``)."""
    factors = [("grid", math.prod(len(v) for v in spec.grid.values()) if spec.grid else 1),
               ("variants", len(spec.variants) or 1),
               ("random", spec.random.budget if spec.random else 1),
               ("seeds", len(spec.seeds) or 1)]  # fmt: skip
    shown = " x ".join(f"{name} {n:,}" for name, n in factors if n != 1) or "1"
    return math.prod(n for _, n in factors), shown


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
        return [name_part(short[k], v) for k, v in values.items()]

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
            names.append(name_part(short["seed"], seed))
        cells.append((cell_name(names), values))
    return cells


def _assign(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b] = value`` for key ``a.b``, creating sections; a value in the way is an error."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise ValueError(f"{key!r} is not a dotted config key such as model.width")
    try:
        set_dotted(data, parts, copy.deepcopy(value))
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


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


def grouped(label: str, problems: list[tuple[str, str]]) -> list[str]:
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
    if not re.fullmatch(NAME_PATTERN, sweep_name):
        raise ConfigError([f"{label}: name: {sweep_name!r} is not a valid folder name; set name: in the sweep file"])
    output = base.get("output") if isinstance(base.get("output"), dict) else {}
    root = Path(runs_dir if runs_dir is not None else output.get("runs_dir", "runs"))
    check_output_folder(root, option="--runs-dir" if runs_dir is not None else "output.runs_dir")
    count, product = cell_count(spec)
    if count > MAX_CELLS:
        raise ConfigError([f"{label}: the sweep has {count:,} cells ({product}); at most {MAX_CELLS:,}"])

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
        raise ConfigError(grouped(label, cell_problems))
    return Sweep(sweep_name, file, base_path, spec, root, cells)
