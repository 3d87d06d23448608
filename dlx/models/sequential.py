"""A small net as a YAML layer list (``model.name: sequential``).

    model:
      name: sequential
      layers: [{conv: {out: 16, kernel: 3, padding: 1}}, {bn: {}}, {act: relu}, {pool: {kind: max, kernel: 2}},
               {dropout: 0.25}, flatten, {linear: {out: 10}}]

Layers: ``conv`` (out, kernel=3, stride=1, padding=0 or "same", dilation=1, groups=1, bias=true),
``pool`` (kind max|avg|stochastic, kernel=2, stride=kernel, padding=0, ceil_mode=false), ``bn`` (eps, momentum),
``act`` (a name: relu, leaky_relu, elu, gelu, silu, sigmoid, tanh), ``dropout`` (p), ``flatten``, ``linear``
(out, bias=true). A bare name is a layer with default options (``flatten``, ``bn``, ``pool``); a scalar is
the main option (``{conv: 16}``, ``{act: relu}``, ``{dropout: 0.25}``, ``{pool: avg}``). Input channels and
features are inferred by running a dummy image through the layers while they are built (so parameter
counts and ``weights_only`` checkpoints work before any training). The last conv/linear layer is the
output: its ``out`` defaults to num_classes and ``width`` scales every other conv/linear layer.
Modules are named ``<kind><index>`` (``conv0``, ``bn1``, ... ``linear6``), so ``freeze: ["conv0.*"]`` works.
``parse_layers`` is the grammar; dlx.config calls it to validate an experiment's layer list.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from dlx.errors import first_line
from dlx.models._registry import MODELS, scaled
from dlx.models.layers import ACTIVATIONS, pool_layer
from dlx.registry import closest

# ---------------------------------------------------------------------------- the layer language


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Conv(_Options):
    out: int | None = Field(None, ge=1)
    kernel: int = Field(3, ge=1)
    stride: int = Field(1, ge=1)
    padding: int | Literal["same"] = 0
    dilation: int = Field(1, ge=1)
    groups: int = Field(1, ge=1)
    bias: bool = True


class Pool(_Options):
    kind: Literal["max", "avg", "stochastic"] = "max"
    kernel: int = Field(2, ge=1)
    stride: int | None = Field(None, ge=1)
    padding: int = Field(0, ge=0)
    ceil_mode: bool = False


class BatchNorm(_Options):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)


class Act(_Options):
    name: str


class Dropout(_Options):
    p: float = Field(0.5, ge=0, lt=1)


class Flatten(_Options):
    pass


class Linear(_Options):
    out: int | None = Field(None, ge=1)
    bias: bool = True


LAYERS: dict[str, type[_Options]] = {
    "conv": Conv,
    "pool": Pool,
    "bn": BatchNorm,
    "act": Act,
    "dropout": Dropout,
    "flatten": Flatten,
    "linear": Linear,
}
# What a scalar stands for: {conv: 16} is {conv: {out: 16}}.
MAIN_OPTION = {"conv": "out", "linear": "out", "pool": "kind", "act": "name", "dropout": "p"}
WEIGHTED = ("conv", "linear")


def _option_problems(prefix: str, error: ValidationError, allowed: list[str]) -> list[str]:
    problems = []
    for err in error.errors(include_url=False):
        where = ".".join([prefix, *(str(p) for p in err["loc"])])
        if err["type"] == "extra_forbidden":
            hint = closest(str(err["loc"][-1]), allowed)
            msg = "unknown option" + (f"; did you mean {hint!r}?" if hint else f"; allowed: {', '.join(allowed)}")
        elif err["type"] == "missing":
            msg = "required option is missing"
        else:
            msg = f"got {err.get('input')!r}; {err['msg'][0].lower()}{err['msg'][1:]}"
        problems.append(f"{where}: {msg}")
    return problems


def parse_layers(raw: Any) -> list[tuple[str, _Options]]:
    """Check a YAML layer list; ValueError with one ``layers.<i>...: message`` per problem, joined by `` | ``."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("layers: expected a non-empty list of layers, e.g. [{conv: {out: 16}}, flatten, linear]")
    specs: list[tuple[str, _Options]] = []
    problems: list[str] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            kind, options = item, None
        elif isinstance(item, dict) and len(item) == 1:
            ((kind, options),) = item.items()
        else:
            problems.append(
                f"layers.{i}: expected a layer name (flatten) or a one-key mapping ({{conv: {{out: 16}}}}), got {item!r}"
            )
            continue
        if kind not in LAYERS:
            hint = closest(str(kind), list(LAYERS))
            tail = f"did you mean {hint!r}?" if hint else f"allowed: {', '.join(LAYERS)}"
            problems.append(f"layers.{i}: unknown layer {kind!r}; {tail}")
            continue
        if options is None:
            options = {}
        elif not isinstance(options, dict):
            if kind not in MAIN_OPTION:
                problems.append(f"layers.{i}.{kind}: got {options!r}; expected a mapping of options or nothing")
                continue
            options = {MAIN_OPTION[kind]: options}
        try:
            spec = LAYERS[kind].model_validate(options)
        except ValidationError as e:
            problems += _option_problems(f"layers.{i}.{kind}", e, list(LAYERS[kind].model_fields))
            continue
        if isinstance(spec, Act) and spec.name not in ACTIVATIONS:
            hint = closest(spec.name, list(ACTIVATIONS))
            tail = f"did you mean {hint!r}?" if hint else f"allowed: {', '.join(ACTIVATIONS)}"
            problems.append(f"layers.{i}.act: unknown activation {spec.name!r}; {tail}")
            continue
        specs.append((kind, spec))
    if problems:
        raise ValueError(" | ".join(problems))
    weighted = [i for i, (kind, _) in enumerate(specs) if kind in WEIGHTED]
    if not weighted:
        raise ValueError("layers: no conv or linear layer; the last one produces the class scores")
    missing_out = [
        f"layers.{i}.{kind}.out: required (only the last conv/linear layer defaults to num_classes)"
        for i, (kind, spec) in enumerate(specs)
        if kind in WEIGHTED and i != weighted[-1] and spec.out is None  # type: ignore[attr-defined]
    ]
    if missing_out:
        raise ValueError(" | ".join(missing_out))
    return specs


def _shape(x: torch.Tensor) -> str:
    return "x".join(map(str, x.shape[1:]))


def _make_layer(kind: str, spec: Any, x: torch.Tensor, out: int | None) -> nn.Module:
    """One layer for input ``x`` (a batch of one); ``out``: its (scaled) output width for conv/linear."""
    if kind == "conv":
        if x.ndim != 4:
            raise ValueError(f"conv needs an image input (channels x height x width), got {_shape(x)}")
        return nn.Conv2d(x.shape[1], out, spec.kernel, spec.stride, spec.padding, spec.dilation, spec.groups,
                         bias=spec.bias)  # fmt: skip
    if kind == "linear":
        if x.ndim != 2:
            raise ValueError(f"linear needs a flat input, got {_shape(x)}; put flatten before it")
        return nn.Linear(x.shape[1], out, bias=spec.bias)
    if kind == "pool":
        if x.ndim != 4:
            raise ValueError(f"pool needs an image input, got {_shape(x)}")
        return pool_layer(spec.kind, spec.kernel, spec.stride, spec.padding, spec.ceil_mode)
    if kind == "bn":
        if x.ndim == 4:
            return nn.BatchNorm2d(x.shape[1], eps=spec.eps, momentum=spec.momentum)
        if x.ndim == 2:
            return nn.BatchNorm1d(x.shape[1], eps=spec.eps, momentum=spec.momentum)
        raise ValueError(f"bn needs an image or a flat input, got {_shape(x)}")
    if kind == "act":
        return ACTIVATIONS[spec.name]()
    if kind == "dropout":
        return nn.Dropout(spec.p)
    return nn.Flatten()


@MODELS.register("sequential")
class SequentialNet(nn.Sequential):
    """Layers listed in YAML (model.layers): conv, pool, bn, act, dropout, flatten, linear; shapes are inferred.

    width scales every conv/linear width except the output layer's (the last conv/linear, whose ``out``
    defaults to num_classes). depth has no meaning for a fixed list and must stay 1.
    """

    def __init__(
        self,
        *,
        layers: list[Any],
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: float = 1.0,
        depth: float = 1.0,
    ) -> None:
        super().__init__()
        if depth != 1.0:
            raise ValueError("depth: a sequential model's layers are listed in model.layers; leave depth at 1")
        specs = parse_layers(layers)
        last = max(i for i, (kind, _) in enumerate(specs) if kind in WEIGHTED)
        # Shapes are inferred by pushing one dummy image through each layer as it is built: every layer is
        # an ordinary (not lazy) module, so parameters exist and can be counted, frozen or loaded right away.
        x = torch.zeros(1, in_channels, image_size, image_size)
        for i, (kind, spec) in enumerate(specs):
            out = None
            if kind in WEIGHTED:
                base = getattr(spec, "out", None)
                out = (base or num_classes) if i == last else scaled(base, width)
            try:
                layer = _make_layer(kind, spec, x, out)
                layer.eval()  # dropout off, batch norm on its running statistics: a plain shape probe
                with torch.no_grad():
                    x = layer(x)
            except (ValueError, RuntimeError) as e:
                raise ValueError(f"layers.{i} ({kind}): {first_line(e)}") from None
            self.add_module(f"{kind}{i}", layer)
        self.train()
        if tuple(x.shape[1:]) != (num_classes,):
            raise ValueError(
                f"the last layer's output is {_shape(x)}; it must be {num_classes} class scores "
                f"(end with flatten and a linear layer)"
            )
