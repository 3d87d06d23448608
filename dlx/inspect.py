"""``dlx models`` and ``dlx inspect``: what a network is, before training it.

``dlx models`` builds every registered model (width 1, depth 1) for one input size and lists its parameters
and FLOPs; ``dlx inspect`` shows one model layer by layer: output shape, parameters, FLOPs and receptive
field (``dlx.modelinfo.receptive_fields``).
"""

from __future__ import annotations

import fnmatch
import inspect as pyinspect
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from torch import nn

from dlx.errors import DlxError
from dlx.modelinfo import count_parameters, flops_per_image, layer_table, leaf_flops, receptive_fields
from dlx.models import MODELS, RESERVED_MODEL_ARGS, build_model
from dlx.registry import describe


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


def model_rows(shape: tuple[int, int, int], classes: int, pattern: str = "*") -> list[ModelRow]:
    """Every registered model matching ``pattern``, built at width 1 / depth 1 for ``shape`` and ``classes``."""
    rows = []
    for name, factory in MODELS.items():
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        params = pyinspect.signature(factory).parameters
        needs = [n for n, p in params.items() if p.default is p.empty and p.kind is p.KEYWORD_ONLY]
        needs = [n for n in needs if n not in RESERVED_MODEL_ARGS]
        if needs:  # sequential: its layers come from the experiment file
            rows.append(ModelRow(name, None, None, f"needs model.{', model.'.join(needs)}"))
            continue
        try:
            model = build_model(name, in_channels=shape[0], num_classes=classes, image_size=shape[1])
        except DlxError as e:
            rows.append(ModelRow(name, None, None, str(e).rsplit(": ", 1)[-1]))
            continue
        rows.append(ModelRow(name, count_parameters(model), flops_per_image(model, shape), describe(factory)))
    if not rows:
        raise DlxError(f"no registered model matches {pattern!r}; models: {', '.join(MODELS.names())}")
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
