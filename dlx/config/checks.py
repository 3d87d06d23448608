"""Checks the schema runs that pydantic's types cannot express: registered names, a factory's keywords, a user's
model (class_path, layer list) and the transfer keys. Each returns or raises one message per problem.

Registries are imported inside the functions: reading dlx.config must not import torch-heavy model code until a
config is validated.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from dlx.registry import closest, unknown_name_message

# The sections arrive as ``model: ModelConfig`` / ``cfg: ExperimentConfig`` objects of dlx.config.schema, which
# imports this module: they are typed ``Any`` here so that the two modules do not import each other.
ModelConfig = Any
ExperimentConfig = Any


def key_text(key: str) -> str:
    """A user's key as a problem line names it: as it is, or quoted when empty or odd (``args.'a b'``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_.-]+", key) else repr(key)


def check_name(kind: str, registry_getter: Callable[[], Any], name: str) -> str:
    registry = registry_getter()
    if name not in registry:
        raise ValueError(unknown_name_message(kind, name, registry.names()))
    return name


def check_kwargs(kind: str, fn: Callable[..., Any], args: dict[str, Any], reserved: set[str]) -> None:
    """Every key in ``args`` must be a keyword the factory accepts (and not one dlx sets itself)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL} - reserved
    problems = []
    for key in args:
        if key in reserved:
            problems.append(f"args.{key}: set by dlx itself; remove it from args")
        elif key not in accepted:
            hint = closest(key, accepted)
            msg = f"args.{key_text(key)}: unknown argument for {kind}"
            msg += f"; did you mean {hint!r}?" if hint else ""
            msg += f" allowed: {', '.join(sorted(accepted)) or '(none)'}"
            problems.append(msg)
    if problems:
        raise ValueError(" | ".join(problems))


def models():
    from dlx.models import MODELS

    return MODELS


def optimizers():
    from dlx.optim import OPTIMIZERS

    return OPTIMIZERS


def schedules():
    from dlx.schedule import SCHEDULES

    return SCHEDULES


def initializers():
    from dlx.init import INITIALIZERS

    return INITIALIZERS


def datasets():
    from dlx.data.datasets import DATASETS

    return DATASETS


def class_path_problems(model: ModelConfig) -> list[str]:
    """What is wrong with a ``class_path`` model section, as ``key: message`` lines."""
    from dlx.models import RESERVED_MODEL_ARGS
    from dlx.models.class_path import import_object, named_params

    try:
        factory = import_object(model.class_path or "")
    except ValueError as e:
        return [f"class_path: {e}"]
    named = named_params(factory)
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
            msg = f"init_args.{key_text(key)}: unknown argument for {model.class_path}"
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
    from dlx.models.class_path import CUSTOM
    from dlx.models.sequential import parse_layers

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
    from dlx.models.class_path import import_object

    if model.class_path is not None:
        return import_object(model.class_path)
    return models().get(model.name)


def transfer_problems(cfg: ExperimentConfig) -> list[str]:
    """Cross-section checks of the transfer keys (weights, init_from, head / head_lr), as ``section.key: message``."""
    from dlx.models.pretrained import TORCHVISION, resolve_weights, torchvision_arch

    m, problems = cfg.model, []
    if m.weights is not None:
        arch = torchvision_arch(m.name, cfg.regularization.batch_norm)
        if m.init_from is not None:
            problems.append("model.weights: choose weights or init_from, not both")
        elif arch is None:
            problems.append(
                f"model.weights: torchvision has pretrained weights for {', '.join(sorted(TORCHVISION))}; "
                f"not for {m.name!r}"
            )
        else:
            try:
                resolve_weights(arch, m.weights)
            except ValueError as e:
                problems.append(f"model.weights: {e}")
    if cfg.optimizer.head_lr is not None and not m.head:
        problems.append("optimizer.head_lr: name the head's parameters in model.head, e.g. ['classifier.*']")
    if m.head and cfg.optimizer.head_lr is None:
        problems.append("model.head: set optimizer.head_lr, the head's learning rate")
    return problems


def schedule_problems(cfg: ExperimentConfig) -> list[str]:
    """Cross-section checks of schedule.args that need train.epochs, as ``section.key: message``."""
    from dlx.schedule import milestone_problem

    s = cfg.schedule
    if s.name == "multistep" and s.args.get("milestones") is not None:
        problem = milestone_problem(s.args["milestones"], cfg.train.epochs)
        if problem:
            return [f"schedule.args.milestones: {problem}"]
    return []
