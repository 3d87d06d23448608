"""A model class of the user's own: ``model.class_path: "package.module:ClassName"`` (+ ``init_args``).

The class is imported when the experiment is validated, never when dlx itself is imported; the current
directory is importable, like ``python -m``. Only an ``nn.Module`` subclass is accepted, checked before
anything is called: importing the user's module is by design, calling whatever a config names
(``subprocess:run``, ``shutil:rmtree``) is not. dlx passes ``in_channels``, ``num_classes``, ``image_size``
(and ``width``, ``depth``, ``dropout``, ``batch_norm`` when set) to the keywords the class names in its
signature; ``init_args`` are checked against it (dlx.config). The model's name in runs and summaries is
``custom``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

import torch
from torch import nn

from dlx.errors import DlxError, first_line
from dlx.registry import closest

# The model name recorded for a ``class_path`` model (it is not in the registry).
CUSTOM = "custom"


def import_object(path: str) -> Any:
    """``package.module:ClassName`` -> the ``nn.Module`` subclass it names; ValueError with one readable reason
    otherwise. The object is only looked up, never called: a function, a module or any other class is refused."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"got {path!r}; expected 'package.module:ClassName'")
    # A console script's sys.path starts at its own bin/ folder; users expect their working directory to be
    # importable (as with ``python -m``), so a module next to the experiments can be named. It goes to the END
    # of sys.path (a json.py there never shadows the standard library); a sweep worker is told the sweep's
    # working directory explicitly (DLX_IMPORT_PATH), since it starts with none on its path.
    user = os.environ.get("DLX_IMPORT_PATH") or os.getcwd()
    if user not in sys.path and "" not in sys.path:
        sys.path.append(user)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error the module raises while it runs
        detail = first_line(e)
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
    if not isinstance(obj, type):
        raise ValueError(f"{path!r} is {_kind(obj)}, not an nn.Module class")
    if not issubclass(obj, nn.Module):
        raise ValueError(f"{path!r} is a class but not a subclass of torch.nn.Module")
    return obj


def _kind(obj: Any) -> str:
    """'a function', 'a module', 'an int': what a class_path named instead of a class."""
    if inspect.isroutine(obj):
        return "a function"
    if inspect.ismodule(obj):
        return "a module"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def named_params(factory: Any) -> dict[str, inspect.Parameter]:
    params = inspect.signature(factory).parameters
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def dlx_keywords(
    factory: Any, width: float, depth: float, dropout: float | None, batch_norm: bool | None
) -> dict[str, Any]:
    """The keywords dlx passes to a user's class: only those its signature names (a ``**kwargs`` often
    forwards to ``nn.Module.__init__``, which would reject them)."""
    named = named_params(factory)
    values = {"width": width, "depth": depth, "dropout": dropout, "batch_norm": batch_norm}
    return {k: v for k, v in values.items() if k in named and v is not None}


def build_class_path_model(
    class_path: str,
    init_args: dict[str, Any],
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: float = 1.0,
    depth: float = 1.0,
    dropout: float | None = None,
    batch_norm: bool | None = None,
) -> nn.Module:
    """Import and call the user's class; its output for one image must be (1, num_classes) scores."""
    try:
        factory = import_object(class_path)
    except ValueError as e:
        raise DlxError(f"model.class_path: {e}") from None
    geometry = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
    named = named_params(factory)
    kwargs = {k: v for k, v in geometry.items() if k in named}
    kwargs.update(dlx_keywords(factory, width, depth, dropout, batch_norm), **init_args)
    try:
        net = factory(**kwargs)
    except Exception as e:  # the user's code: any failure is reported as one line naming the class
        raise DlxError(f"model.class_path: {class_path}({_kwargs_text(kwargs)}) failed: {first_line(e)}") from None
    if not isinstance(net, nn.Module):
        raise DlxError(f"model.class_path: {class_path} returned a {type(net).__name__}, not an nn.Module")
    # A wrong output shape would otherwise surface as a cryptic cross-entropy error in the first step.
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as e:
        raise DlxError(
            f"model.class_path: {class_path} fails on a {in_channels}x{image_size}x{image_size} image: {first_line(e)}"
        ) from None
    finally:
        net.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DlxError(
            f"model.class_path: {class_path} returns {got} for one image; expected (1, {num_classes}) scores"
        )
    return net


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
