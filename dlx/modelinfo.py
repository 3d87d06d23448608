"""What a model is: parameter count, FLOPs per image, a per-layer table (for --dry-run), receptive fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def flops_per_image(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs for one image (a multiply-add counts 2), as torch.utils.flop_counter counts them."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int


@torch.no_grad()
def layer_table(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """One row per leaf module in call order, with its output shape (batch of 1) and own parameters."""
    rows: list[LayerRow] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(names.get(module, "?"), type(module).__name__, shape, params))

    for module in model.modules():
        if not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


# ---------------------------------------------------------------------------- receptive fields


@dataclass(frozen=True)
class Field2d:
    """Receptive field of one output unit, per axis (height, width), in input pixels.

    rf: how many input pixels one unit sees; jump: input pixels between neighbouring units (the product of
    strides so far); start: the centre of the first unit's field, in input coordinates (pixel 0 spans 0..1,
    so the input itself starts at 0.5). The usual recurrences (Araujo et al., "Computing receptive fields
    of convolutional neural networks", Distill 2019), with k_eff = dilation * (k - 1) + 1:
    rf' = rf + (k_eff - 1) * jump,  jump' = jump * stride,  start' = start + ((k_eff - 1) / 2 - padding) * jump.
    """

    rf: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]

    def through(self, kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> Field2d:
        k, s, p, d = (_pair(v) for v in (kernel, stride, padding, dilation))
        k_eff = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d, strict=True))
        return Field2d(
            rf=tuple(r + (ke - 1) * j for r, ke, j in zip(self.rf, k_eff, self.jump, strict=True)),  # type: ignore[arg-type]
            jump=tuple(j * si for j, si in zip(self.jump, s, strict=True)),  # type: ignore[arg-type]
            start=tuple(
                st + ((ke - 1) / 2 - pi) * j for st, ke, pi, j in zip(self.start, k_eff, p, self.jump, strict=True)
            ),  # type: ignore[arg-type]
        )

    def text(self, which: str = "rf") -> str:
        h, w = getattr(self, which)
        fmt = (lambda v: f"{v:g}") if which == "start" else str
        return fmt(h) if h == w else f"{fmt(h)}x{fmt(w)}"


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int | float):
        return (int(v), int(v))
    return (int(v[0]), int(v[1]))


@dataclass
class ReceptiveFields:
    """The field of each leaf layer's output (None: not a spatial map, e.g. after flatten), in call order."""

    layers: list[tuple[str, Field2d | None]]  # (leaf module name, field of its output), one per call
    branching: bool  # branches merged somewhere (add, cat): fields follow the widest path


# Functional ops that move a field, and where their arguments sit: (kernel, stride, padding, dilation) positions;
# "weight": the kernel size is the weight's last two dimensions; None: not an argument of that op.
_SPATIAL_OPS: dict[Any, tuple[Any, ...]] = {
    F.conv2d: ("weight", 3, 4, 5),
    F.max_pool2d: (1, 2, 3, 4),
    F.avg_pool2d: (1, 2, 3, None),
    F.lp_pool2d: (2, 3, None, None),
}


class _FieldTracker(TorchFunctionMode):
    """Carries a Field2d along every tensor a forward pass computes.

    Ops that merge tensors (``out + identity``, ``torch.cat`` of inception branches) keep the largest input
    field: a unit after the merge sees at least that much, and along that path exactly that. Spatial ops called
    outside a kernel module (``F.max_pool2d`` in a forward) change the field like their module would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, Field2d | None] = {}
        self.keep: list[torch.Tensor] = []  # alive until the pass ends, so no id() is reused for another tensor
        self.paused = 0
        self.branching = False

    def set(self, t: Any, value: Field2d | None) -> None:
        if isinstance(t, torch.Tensor):
            self.fields[id(t)] = value if t.ndim == 4 else None
            self.keep.append(t)
        elif isinstance(t, list | tuple):
            for item in t:
                self.set(item, value)

    def get(self, t: Any) -> Field2d | None:
        return self.fields.get(id(t)) if isinstance(t, torch.Tensor) else None

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.paused:
            return out
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        tensors += [t for a in args if isinstance(a, list | tuple) for t in a if isinstance(t, torch.Tensor)]
        known = [f for f in (self.fields.get(id(t)) for t in tensors) if f is not None]
        tracked = [t for t in tensors if id(t) in self.fields]
        if not tracked:
            return out
        if len({(f.rf, f.jump) for f in known}) > 1:
            self.branching = True
        field_in = max(known, key=lambda f: f.rf, default=None)
        if field_in is not None and func in _SPATIAL_OPS and isinstance(out, torch.Tensor):
            field_in = _functional_field(field_in, _SPATIAL_OPS[func], args, kwargs)
        self.set(out, field_in)
        return out


def _functional_field(field_in: Field2d, spec: tuple[Any, ...], args: Any, kwargs: dict[str, Any]) -> Field2d:
    names = ("kernel_size", "stride", "padding", "dilation")

    def arg(pos: Any, name: str, default: Any) -> Any:
        if pos is None:
            return default
        if pos == "weight":
            w = args[1] if len(args) > 1 else kwargs["weight"]
            return tuple(w.shape[-2:])
        return args[pos] if len(args) > pos else kwargs.get(name, default)

    kernel = arg(spec[0], names[0], 1)
    stride = arg(spec[1], names[1], None) or kernel
    padding = arg(spec[2], names[2], 0)
    dilation = arg(spec[3], names[3], 1)
    if isinstance(padding, str):  # conv padding="same"/"valid"
        padding = (
            tuple((d * (k - 1)) // 2 for k, d in zip(_pair(kernel), _pair(dilation), strict=True))
            if padding == "same"
            else 0
        )
    return field_in.through(kernel, stride, padding, dilation)


@torch.no_grad()
def receptive_fields(model: nn.Module, input_shape: tuple[int, int, int]) -> ReceptiveFields:
    """Receptive field, jump and start of every leaf layer's output, for one image of ``input_shape``.

    Conv and pooling modules (anything with ``kernel_size`` and ``stride``, including dlx's
    StochasticPool2d) apply the recurrence from their settings; adaptive pooling to an n x n map acts like a
    pool with kernel = stride = input size / n; every other op passes its input's field on. Outputs that
    are not N x C x H x W (after flatten, linear layers) have no spatial field (None).
    """
    tracker = _FieldTracker()
    rows: list[tuple[str, Field2d | None]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def pre(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if _is_kernel_module(module):
            tracker.paused += 1  # the module's own ops (unfold, pad, ...) must not move the field twice

    def post(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        field_in = tracker.get(inputs[0]) if inputs else None
        if _is_kernel_module(module):
            tracker.paused -= 1
            if field_in is not None:
                field_out = _module_field(module, field_in, inputs[0], output)
                tracker.set(output, field_out)
            else:
                tracker.set(output, None)
        rows.append((names.get(module, "?"), tracker.get(output[0] if isinstance(output, tuple | list) else output)))

    for module in model.modules():
        if not any(True for _ in module.children()):
            hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, *input_shape, device=device)
    try:
        with tracker:
            tracker.set(x, Field2d(rf=(1, 1), jump=(1, 1), start=(0.5, 0.5)))
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return ReceptiveFields(rows, tracker.branching)


def _is_kernel_module(module: nn.Module) -> bool:
    adaptive = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    return isinstance(module, adaptive) or (hasattr(module, "kernel_size") and hasattr(module, "stride"))


def _module_field(module: nn.Module, field_in: Field2d, x: Any, output: Any) -> Field2d | None:
    out = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not isinstance(out, torch.Tensor) or out.ndim != 4:
        return None
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        # Exact when the input size is a multiple of the output size (7 -> 1: one window of 7).
        size_in, size_out = x.shape[-2:], out.shape[-2:]
        kernel = tuple(max(1, -(-i // o)) for i, o in zip(size_in, size_out, strict=True))
        stride = tuple(max(1, i // o) for i, o in zip(size_in, size_out, strict=True))
        return field_in.through(kernel, stride, 0)
    padding = getattr(module, "padding", 0)
    kernel = module.kernel_size
    dilation = getattr(module, "dilation", 1)
    if isinstance(padding, str):
        padding = (
            tuple((d * (k - 1)) // 2 for k, d in zip(_pair(kernel), _pair(dilation), strict=True))
            if padding == "same"
            else 0
        )
    return field_in.through(kernel, module.stride or kernel, padding, dilation)


def leaf_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """Forward FLOPs of one image per leaf module name (torch.utils.flop_counter's per-module counts)."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    root = type(model).__name__ + "."
    return {k[len(root) :]: int(sum(v.values())) for k, v in counter.get_flop_counts().items() if k.startswith(root)}
