"""``dlx profile``: where a training step spends its time, per layer type (forward and backward).

A few training batches run on the configured device (after one warm-up batch, untimed). Forward time is
measured per leaf module with forward pre/post hooks. Backward time is measured on the autograd graph:
each module's output node gets a pre-hook that stamps when the engine reaches it, and the time until the
next stamped node is that module's backward (its gradient ops and the accumulation into its weights).
Autograd node hooks are used rather than module backward hooks because those wrap outputs in views that
in-place activations (``ReLU(inplace=True)``) may not modify. Time outside any leaf module (functional ops in
a forward, the loss and its gradient) is the row ``(other)``, so the shares add up to 100%. On CUDA every
stamp synchronizes the device: the totals are slower than a real step, the shares are what to read.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlx.build import AMP_DTYPES, Setup, make_batches
from dlx.errors import DlxError
from dlx.models.layers import aux_loss, main_logits
from dlx.runs import write_json_atomic, write_png_atomic

OTHER = "(other)"


@dataclass
class LayerTime:
    kind: str
    modules: int
    forward_ms: float  # per batch
    backward_ms: float
    share: float  # percent of the whole step (forward + backward)


@dataclass
class ProfileResult:
    name: str
    device: str
    batches: int
    batch_size: int
    step_ms: float  # forward + loss + backward per batch, as measured (with the hooks' synchronization)
    rows: list[LayerTime]


def _loss(out: Any, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(main_logits(out).float(), y) + aux_loss(out, y)  # aux: googlenet's auxiliary heads


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list):
        return next((t for t in (_first_tensor(o) for o in out) if t is not None), None)
    return None


def profile(setup: Setup, batches: int = 5, warmup: int = 1) -> ProfileResult:
    """Time ``batches`` training batches (forward, loss, backward; no optimizer step) per layer type."""
    if batches < 1:
        raise DlxError(f"--batches: got {batches}; at least 1")
    cfg, model, device = setup.config, setup.model, setup.device
    amp = AMP_DTYPES[cfg.train.precision]
    loader = make_batches(setup, setup.train, batch_size=cfg.data.batch_size)
    if len(loader) < warmup + batches:
        raise DlxError(f"--batches: the training split has only {len(loader)} batches of {cfg.data.batch_size}")

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    counts = Counter(type(m).__name__ for m in leaves)
    forward: dict[str, float] = defaultdict(float)
    backward: dict[str, float] = defaultdict(float)
    started: dict[nn.Module, float] = {}
    stamps: list[tuple[float, str]] = []
    owners: set[Any] = set()
    timing = False

    def pre(module: nn.Module, _inputs: Any) -> None:
        if timing:
            started[module] = now()

    def post(module: nn.Module, _inputs: Any, output: Any) -> None:
        if not timing:
            return
        kind = type(module).__name__
        forward[kind] += now() - started.pop(module)
        out = _first_tensor(output)
        node = out.grad_fn if out is not None else None
        # First claim wins: an identity-like module returns its input, whose node belongs to the layer before.
        if node is not None and node not in owners:
            owners.add(node)
            node.register_prehook(lambda _grads, kind=kind: stamps.append((now(), kind)))

    hooks = [h for m in leaves for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    torch.manual_seed(cfg.seed)
    setup.transfer.train_mode(model)
    forward_total = backward_total = 0.0
    try:
        for i, (x, y) in enumerate(loader):
            if i == warmup + batches:
                break
            timing = i >= warmup
            stamps.clear()
            owners.clear()
            t0 = now()
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = model(x)
                t1 = now()
                loss = _loss(out, y)
            loss.backward()
            t3 = now()
            model.zero_grad(set_to_none=True)
            if not timing:
                continue
            forward_total += t1 - t0
            backward_total += t3 - t1  # the loss's forward and backward count as "other"
            ordered = sorted(stamps)
            for (t, kind), (t_next, _) in zip(ordered, [*ordered[1:], (t3, "")], strict=True):
                backward[kind] += t_next - t
    finally:
        for h in hooks:
            h.remove()
    step = forward_total + backward_total
    kinds = sorted(set(forward) | set(backward))
    other_forward = forward_total - sum(forward.values())
    other_backward = backward_total - sum(backward.values())
    rows = [
        LayerTime(k, counts.get(k, 0), 1e3 * forward[k] / batches, 1e3 * backward[k] / batches,
                  100 * (forward[k] + backward[k]) / step)
        for k in kinds
    ]  # fmt: skip
    rows.sort(key=lambda r: -r.share)
    rows.append(LayerTime(OTHER, 0, 1e3 * other_forward / batches, 1e3 * other_backward / batches,
                          100 * (other_forward + other_backward) / step))  # fmt: skip
    return ProfileResult(cfg.name, str(device), batches, cfg.data.batch_size, 1e3 * step / batches, rows)


def print_profile(result: ProfileResult, console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"{result.name}: {result.batches} batches of {result.batch_size} on {result.device}, "
        f"{result.step_ms:,.1f} ms per batch (forward + backward)"
    )
    for col in ("layer type", "modules", "forward ms", "backward ms", "share"):
        table.add_column(col, justify="left" if col == "layer type" else "right")
    for r in result.rows:
        table.add_row(r.kind, str(r.modules or ""), f"{r.forward_ms:,.2f}", f"{r.backward_ms:,.2f}", f"{r.share:.1f}%")
    console.print(table)


def save_chart(result: ProfileResult, path: Path) -> None:
    """A horizontal bar per layer type: forward and backward milliseconds per batch, labelled with its share."""
    from matplotlib.figure import Figure

    rows = list(reversed(result.rows))  # matplotlib draws the first bar at the bottom
    fig = Figure(figsize=(8, 1.2 + 0.35 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    labels = [r.kind for r in rows]
    fwd = [r.forward_ms for r in rows]
    bwd = [r.backward_ms for r in rows]
    ax.barh(labels, fwd, color="#4c72b0", label="forward")
    ax.barh(labels, bwd, left=fwd, color="#dd8452", label="backward")
    for i, r in enumerate(rows):
        ax.text(r.forward_ms + r.backward_ms, i, f" {r.share:.1f}%", va="center", fontsize=8)
    ax.set_xlabel("ms per batch")
    ax.set_title(f"{result.name}: time per layer type ({result.device}, batch {result.batch_size})", fontsize=10)
    ax.margins(x=0.15)
    ax.legend(loc="lower right", fontsize=8)
    write_png_atomic(fig, path, dpi=120)


def write_profile(result: ProfileResult, folder: Path) -> list[Path]:
    """profile.png (the chart) and profile.json (the numbers) in ``folder``."""
    png, data = folder / "profile.png", folder / "profile.json"
    save_chart(result, png)
    write_json_atomic(data, asdict(result))
    return [png, data]
