"""``dlx models`` and ``dlx inspect``: what a network is, before training it.

``dlx models`` lists every registered model (width 1, depth 1) for one input size with its parameters and
FLOPs. They are counted on the meta device (shapes only: no weights allocated, no arithmetic done) and kept
in the figures cache (``dlx.modelcache``), so a repeated listing imports no torch; a model meta cannot run
is built for real. ``dlx inspect`` shows one model layer by layer: output shape, parameters, FLOPs and
receptive field (``dlx.modelinfo.receptive_fields``).

Torch is imported inside the functions that need it: ``dlx models`` answered from the cache never loads it.
"""

from __future__ import annotations

import fnmatch
import inspect as pyinspect
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from dlx.errors import DlxError, first_line
from dlx.modelcache import FiguresCache
from dlx.registry import describe

if TYPE_CHECKING:
    from torch import nn


def parse_input(spec: str) -> tuple[int, int, int]:
    """``1x28x28`` -> (1, 28, 28); the models take square images."""
    parts = spec.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise DlxError(f"--input: got {spec!r}; expected CHANNELSxHEIGHTxWIDTH, e.g. 1x28x28 or 3x32x32")
    c, h, w = (int(p) for p in parts)
    if h != w:
        raise DlxError(f"--input: got {spec!r}; the models take square images (height = width)")
    return c, h, w


def _mflops(flops: int) -> str:
    return f"{flops / 1e6:,.1f}"


@dataclass
class ModelRow:
    name: str
    parameters: int | None
    flops: int | None
    note: str


def required_args(factory: Any) -> list[str]:
    """The keywords a factory needs beyond what dlx passes (``sequential``: its layers, from the experiment file)."""
    from dlx.models import RESERVED_MODEL_ARGS

    params = pyinspect.signature(factory).parameters
    needs = [n for n, p in params.items() if p.default is p.empty and p.kind is p.KEYWORD_ONLY]
    return [n for n in needs if n not in RESERVED_MODEL_ARGS]


def meta_figures(name: str, shape: tuple[int, int, int], classes: int) -> tuple[int, int]:
    """(parameters, FLOPs per image) of a registered model at width 1 / depth 1, built on the meta device.

    Parameter shapes are all a count needs, and torch's FLOP counter reads only shapes, so no weight is
    allocated or initialized and the forward pass does no arithmetic. Raises whatever the model raises,
    including the errors of a model that reads tensor values (meta tensors have none).
    """
    import torch

    from dlx.modelinfo import count_parameters, flops_per_image
    from dlx.models import build_model

    with torch.device("meta"):
        model = build_model(name, in_channels=shape[0], num_classes=classes, image_size=shape[1])
    return count_parameters(model), flops_per_image(model, shape)


def full_figures(name: str, shape: tuple[int, int, int], classes: int) -> tuple[int, int]:
    """The same figures from a full build on the CPU: the fallback for a model the meta device cannot run."""
    from dlx.modelinfo import count_parameters, flops_per_image
    from dlx.models import build_model

    model = build_model(name, in_channels=shape[0], num_classes=classes, image_size=shape[1])
    return count_parameters(model), flops_per_image(model, shape)


def _row(name: str, factory: Any, shape: tuple[int, int, int], classes: int) -> ModelRow:
    needs = required_args(factory)
    if needs:  # sequential: its layers come from the experiment file
        return ModelRow(name, None, None, f"needs model.{', model.'.join(needs)}")
    try:
        parameters, flops = meta_figures(name, shape, classes)
    except Exception:  # meta could not: the full build decides, and fails (or not) as it always has
        try:
            parameters, flops = full_figures(name, shape, classes)
        except DlxError as e:  # cannot be built for this input: the reason, shown in the table
            return ModelRow(name, None, None, str(e).rsplit(": ", 1)[-1])
        except RuntimeError as e:  # built, but the input is too small for its layers (pooling below 1x1)
            return ModelRow(name, None, None, f"does not run on {'x'.join(map(str, shape))}: {first_line(e)}")
    return ModelRow(name, parameters, flops, describe(factory))


def _is_row(row: Any) -> bool:
    """A cached row that a ``ModelRow`` can be made of (anything else is counted again)."""
    figure = (type(None), int)
    return (
        isinstance(row, dict)
        and set(row) == {"name", "parameters", "flops", "note"}
        and isinstance(row["name"], str)
        and isinstance(row["note"], str)
        and isinstance(row["parameters"], figure)
        and isinstance(row["flops"], figure)
    )


def _matching(names: list[str], pattern: str) -> list[str]:
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def model_rows(
    shape: tuple[int, int, int], classes: int, pattern: str = "*", cache_folder: Path | None = None
) -> list[ModelRow]:
    """Every registered model matching ``pattern``, at width 1 / depth 1 for ``shape`` and ``classes``.

    Rows come from the figures cache (``cache_folder``, default ``dlx.modelcache.cache_dir()``) when it has
    them; the others are counted on the meta device (``meta_figures``) and added to it.
    """
    cache = FiguresCache.load(cache_folder)
    known = {n: row for n, row in cache.table(shape, classes).items() if _is_row(row)}
    names = cache.names
    # An imported registry is the truth: it may hold models registered at run time, outside the fingerprint.
    if "dlx.models" in sys.modules or names is None or any(n not in known for n in _matching(names, pattern)):
        from dlx.models import MODELS

        names = MODELS.names()
        own = {n for n in names if getattr(MODELS.get(n), "__module__", "").startswith("dlx.")}
        cache.set_names([n for n in names if n in own])  # the cache only speaks for dlx's own models
        new = {n: asdict(_row(n, MODELS.get(n), shape, classes)) for n in _matching(names, pattern) if n not in known}
        known.update(new)
        cache.put(shape, classes, {n: row for n, row in new.items() if n in own})
        cache.save()
    rows = [ModelRow(**known[n]) for n in _matching(names, pattern)]
    if not rows:
        raise DlxError(f"no registered model matches {pattern!r}; models: {', '.join(names)}")
    return rows


def print_models(rows: list[ModelRow], shape: tuple[int, int, int], classes: int, console: Console) -> None:
    table = Table(title=f"models for {'x'.join(map(str, shape))} input, {classes} classes (width 1, depth 1)")
    table.add_column("model")
    table.add_column("parameters", justify="right")
    table.add_column("MFLOPs/image", justify="right")
    table.add_column("description")
    for r in rows:
        params = "-" if r.parameters is None else f"{r.parameters:,}"
        flops = "-" if r.flops is None else _mflops(r.flops)
        table.add_row(r.name, params, flops, r.note)
    console.print(table)


@dataclass
class Target:
    """A model to inspect, with the input it is built for."""

    model: nn.Module
    shape: tuple[int, int, int]
    title: str


def resolve_target(target: str, overrides: list[str], shape: tuple[int, int, int], classes: int) -> Target:
    """An experiment file (its dataset gives the input) or a registered model name (built for ``shape``)."""
    path = Path(target)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        from dlx.build import build_initialized_model
        from dlx.config import load_config
        from dlx.data.datasets import load_data

        cfg = load_config(path, overrides)
        data = load_data(cfg.data)
        model = build_initialized_model(cfg, data)
        data_shape = (data.in_channels, data.image_size, data.image_size)
        what = cfg.model.class_path or cfg.model.name
        return Target(model, data_shape, f"{cfg.name}: {what} on {cfg.data.dataset}")
    if overrides:
        raise DlxError("--set needs an experiment file; for a model name use --input and --classes")
    from dlx.models import MODELS, build_model

    MODELS.get(target)  # an unknown name: a DlxError with did-you-mean
    model = build_model(target, in_channels=shape[0], num_classes=classes, image_size=shape[1])
    return Target(model, shape, f"{target} (width 1, depth 1), {classes} classes")


@dataclass
class LayerInfo:
    name: str
    kind: str
    output_shape: str
    parameters: int | None  # None on a repeated call of the same module (counted at its first call)
    flops: int | None
    rf: str
    jump: str
    start: str


def inspect_layers(model: nn.Module, shape: tuple[int, int, int]) -> tuple[list[LayerInfo], bool]:
    """One row per leaf-layer call; and whether the net branches (receptive fields then follow the widest path)."""
    from dlx.modelinfo import layer_table, leaf_flops, receptive_fields

    table = layer_table(model, shape)
    fields = receptive_fields(model, shape)
    flops = leaf_flops(model, shape)
    rows, seen = [], set()
    for row, (name, field) in zip(table, fields.layers, strict=True):
        first = name not in seen
        seen.add(name)
        rows.append(
            LayerInfo(
                name=row.name,
                kind=row.kind,
                output_shape="x".join(map(str, row.output_shape)),
                parameters=row.parameters if first else None,
                flops=flops.get(name, 0) if first else None,
                rf="-" if field is None else field.text("rf"),
                jump="-" if field is None else field.text("jump"),
                start="-" if field is None else field.text("start"),
            )
        )
    return rows, fields.branching


def print_inspect(target: Target, console: Console) -> None:
    from dlx.modelinfo import count_parameters, flops_per_image

    rows, branching = inspect_layers(target.model, target.shape)
    table = Table(title=f"{target.title}, input {'x'.join(map(str, target.shape))}")
    for col in ("layer", "type", "output", "parameters", "FLOPs", "RF", "jump", "start"):
        table.add_column(col, justify="left" if col in ("layer", "type", "output") else "right")
    for r in rows:
        params = "" if r.parameters is None else f"{r.parameters:,}"
        flops = "" if r.flops is None else f"{r.flops:,}"
        table.add_row(r.name, r.kind, r.output_shape, params, flops, r.rf, r.jump, r.start)
    console.print(table)
    console.print(
        f"parameters: {count_parameters(target.model):,}   FLOPs/image: {flops_per_image(target.model, target.shape):,}"
    )
    console.print(
        "RF: input pixels one output unit sees (per side); jump: input pixels between neighbouring units; "
        "start: centre of the first unit's field; '-': not a spatial map"
    )
    if branching:
        console.print(
            "branching network: where branches merge (residual add, inception/dense cat) the larger field is "
            "kept, so RF follows the main (widest) path"
        )
