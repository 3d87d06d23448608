"""Models the user writes: a class of their own (``model.class_path``) or a layer list in YAML (``name: sequential``).

A class of your own::

    model: {class_path: "mypackage.nets:SmallNet", init_args: {hidden: 64}}

The class (or a function returning an ``nn.Module``) is imported when the experiment is validated,
never when dlx itself is imported; the current directory is importable, like ``python -m``. dlx passes
``in_channels``, ``num_classes``, ``image_size`` (and ``width``, ``depth``, ``dropout``, ``batch_norm``
when set) to the keywords the class names in its signature; ``init_args`` are checked against it.
The model's name in runs and summaries is ``custom``.

A layer list::

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
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from dlx.errors import DlxError
from dlx.models import MODELS, RESERVED_MODEL_ARGS, build_model, scaled
from dlx.models.layers import ACTIVATIONS, pool_layer
from dlx.registry import closest

if TYPE_CHECKING:
    from dlx.config import ModelConfig

# The model name recorded for a ``class_path`` model (it is not in the registry).
CUSTOM = "custom"

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
                detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"layers.{i} ({kind}): {detail}") from None
            self.add_module(f"{kind}{i}", layer)
        self.train()
        if tuple(x.shape[1:]) != (num_classes,):
            raise ValueError(
                f"the last layer's output is {_shape(x)}; it must be {num_classes} class scores "
                f"(end with flatten and a linear layer)"
            )


# ---------------------------------------------------------------------------- class_path


def import_object(path: str) -> Any:
    """``package.module:Name`` -> the object; ValueError with one readable reason otherwise."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"got {path!r}; expected 'package.module:ClassName'")
    # A console script's sys.path starts at its own bin/ folder; users expect their working directory to be
    # importable (as with ``python -m``), so a module next to the experiments can be named.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error the module raises while it runs
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not isinstance(e, ImportError):
            detail = f"{type(e).__name__}: {detail}"
        raise ValueError(f"cannot import {path!r} ({detail})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            hint = closest(part, names)
            more = f"; did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"cannot import {path!r} ({getattr(obj, '__name__', module_name)!r} has no {part!r}{more})"
            )
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)) and not inspect.isfunction(obj):
        raise ValueError(f"{path!r} is a {type(obj).__name__}, not an nn.Module class (or a function returning one)")
    return obj


def _named_params(factory: Any) -> dict[str, inspect.Parameter]:
    params = inspect.signature(factory).parameters
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def dlx_keywords(factory: Any, model: ModelConfig, dropout: float | None, batch_norm: bool | None) -> dict[str, Any]:
    """The keywords dlx passes to a user's class: only those its signature names (a ``**kwargs`` often
    forwards to ``nn.Module.__init__``, which would reject them)."""
    named = _named_params(factory)
    values = {"width": model.width, "depth": model.depth, "dropout": dropout, "batch_norm": batch_norm}
    return {k: v for k, v in values.items() if k in named and v is not None}


def class_path_problems(model: ModelConfig) -> list[str]:
    """What is wrong with a ``class_path`` model section, as ``key: message`` lines."""
    try:
        factory = import_object(model.class_path or "")
    except ValueError as e:
        return [f"class_path: {e}"]
    named = _named_params(factory)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    problems = []
    for key in ("width", "depth"):
        if getattr(model, key) != 1.0 and key not in named:
            problems.append(f"{key}: {model.class_path} takes no {key!r} keyword; leave it at 1")
    dlx_sets = RESERVED_MODEL_ARGS & set(named)
    for key in model.init_args:
        if key in dlx_sets:
            problems.append(f"init_args.{key}: set by dlx itself; remove it from init_args")
        elif key not in named and not takes_any:
            accepted = sorted(set(named) - dlx_sets)
            hint = closest(key, accepted)
            msg = f"init_args.{key}: unknown argument for {model.class_path}"
            msg += f"; did you mean {hint!r}?" if hint else ""
            problems.append(msg + f" allowed: {', '.join(accepted) or '(none)'}")
    required = [
        n for n, p in named.items()
        if p.default is p.empty and n not in model.init_args and n not in {"in_channels", "num_classes", "image_size"}
    ]  # fmt: skip
    if required:
        problems.append(f"init_args: {model.class_path} needs {', '.join(map(repr, required))}; add to init_args")
    return problems


def model_problems(model: ModelConfig) -> list[str]:
    """Checks of the user-model keys of a model section (``class_path``, ``init_args``, ``layers``)."""
    if model.class_path is not None:
        problems = []
        if model.name != CUSTOM:
            problems.append(f"class_path: replaces name ({model.name!r}); remove name or set it to {CUSTOM!r}")
        if model.args:
            problems.append("args: a class_path model takes init_args, not args")
        if model.layers is not None:
            problems.append("layers: only for name: sequential")
        return problems + class_path_problems(model)
    problems = []
    if model.name == CUSTOM:
        problems.append(f"name: {CUSTOM!r} needs class_path: 'package.module:ClassName'")
    if model.init_args:
        problems.append("init_args: only with class_path; a registered model takes args")
    if model.name == "sequential":
        if model.layers is None:
            problems.append(
                "layers: required for name: sequential, e.g. [{conv: {out: 16}}, {act: relu}, flatten, linear]"
            )
        else:
            try:
                parse_layers(model.layers)
            except ValueError as e:
                problems += str(e).split(" | ")
        if "layers" in model.args:
            problems.append("args.layers: put the layers in model.layers")
        if model.depth != 1.0:
            problems.append("depth: a sequential model's layers are listed in model.layers; leave depth at 1")
    elif model.layers is not None:
        problems.append(f"layers: only for name: sequential (model {model.name!r} has its own layers)")
    return problems


def model_factory(model: ModelConfig) -> Any:
    """The class or function that builds the configured model (for signature checks)."""
    if model.class_path is not None:
        return import_object(model.class_path)
    return MODELS.get(model.name)


def build_from_config(
    model: ModelConfig,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float | None = None,
    batch_norm: bool | None = None,
) -> nn.Module:
    """Build the model a validated ``model:`` section describes: registered, sequential or class_path."""
    if model.class_path is None:
        args = dict(model.args)
        if model.layers is not None:
            args["layers"] = model.layers
        return build_model(model.name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                           width=model.width, depth=model.depth, dropout=dropout, batch_norm=batch_norm,
                           args=args)  # fmt: skip
    try:
        factory = import_object(model.class_path)
    except ValueError as e:
        raise DlxError(f"model.class_path: {e}") from None
    geometry = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
    named = _named_params(factory)
    kwargs = {k: v for k, v in geometry.items() if k in named}
    kwargs.update(dlx_keywords(factory, model, dropout, batch_norm), **model.init_args)
    try:
        net = factory(**kwargs)
    except Exception as e:  # the user's code: any failure is reported as one line naming the class
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DlxError(f"model.class_path: {model.class_path}({_kwargs_text(kwargs)}) failed: {detail}") from None
    if not isinstance(net, nn.Module):
        raise DlxError(f"model.class_path: {model.class_path} returned a {type(net).__name__}, not an nn.Module")
    # A wrong output shape would otherwise surface as a cryptic cross-entropy error in the first step.
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DlxError(
            f"model.class_path: {model.class_path} fails on a {in_channels}x{image_size}x{image_size} image: {detail}"
        ) from None
    finally:
        net.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DlxError(
            f"model.class_path: {model.class_path} returns {got} for one image; expected (1, {num_classes}) scores"
        )
    return net


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
