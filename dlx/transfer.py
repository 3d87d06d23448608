"""Transfer learning: start from trained weights, keep parts fixed, give the head its own learning rate.

    model:
      name: deep_cnn
      init_from: runs/mnist_deep/20250101-120000   # a run (its best.pt, else last.pt) or a checkpoint file
      # weights: DEFAULT                           # or torchvision's pretrained weights (resnet18, vgg16, ...)
      freeze: ["features.*"]                       # fnmatch patterns on parameter names ("features" = "features.*")
      head: ["classifier.*"]
    optimizer: {name: adam, lr: 0.0001, head_lr: 0.001}

Every tensor of the source whose name and shape match the model is loaded; one whose shape differs
(a new classifier head, a small-image stem) is skipped; the report lists what was loaded, skipped,
missing (in the model, not in the source: freshly initialized) and unused (in the source only). It is
printed when training starts and stored in summary.json under ``init_from``. A source of which no tensor
fits is an error naming the first mismatches: training would otherwise silently start from scratch.

Frozen parameters get ``requires_grad = False`` and are left out of the optimizer (so neither weight
decay nor momentum moves them). A batch-norm layer whose parameters are all frozen (or, without
parameters, whose name a pattern matches) is kept in eval mode while training: its running statistics
stay those of the source, as its scale and shift do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn

from dlx.checkpoint import read_torch_file
from dlx.download import socket_timeout
from dlx.errors import DlxError, first_line
from dlx.models.pretrained import rename_torchvision_keys, resolve_weights, torchvision_arch
from dlx.runs import CONFIG_FILE, Run

if TYPE_CHECKING:
    from dlx.config import ExperimentConfig

DOWNLOAD_TIMEOUT_S = 30.0

# ---------------------------------------------------------------------------- loading weights


def _dims(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


@dataclass
class LoadReport:
    """What loading a state dict into a model did, tensor by tensor (parameters and buffers)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> "source shape -> model shape"
    missing: list[str] = field(default_factory=list)  # in the model, not in the source: left as initialized
    unused: list[str] = field(default_factory=list)  # in the source, not in the model
    weights: str | None = None  # torchvision's enum name, for model.weights

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.weights is not None:
            out["weights"] = self.weights
        out.update(loaded=len(self.loaded), skipped=list(self.skipped), missing=self.missing, unused=self.unused)
        return out

    def lines(self) -> list[str]:
        source = f"{self.weights} ({self.path})" if self.weights else self.path
        out = [f"[bold]weights[/] from {source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}, "
               f"missing {len(self.missing)}, unused {len(self.unused)}"]  # fmt: skip
        if self.skipped:
            out.append(
                "  skipped (shape differs, source -> model): " + _listing(f"{k} {v}" for k, v in self.skipped.items())
            )
        if self.missing:
            out.append("  missing (kept as initialized): " + _listing(self.missing))
        if self.unused:
            out.append("  unused (not in this model): " + _listing(self.unused))
        return out


def _listing(items: Any, limit: int = 12) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def checkpoint_path(spec: str | os.PathLike[str]) -> Path:
    """``model.init_from`` -> the file to read: a run's best.pt (else last.pt), or the file itself."""
    path = Path(spec)
    if path.is_file():
        return path
    if not path.exists():
        raise DlxError(f"model.init_from: {path}: no such run directory or checkpoint file")
    if not (path / CONFIG_FILE).is_file():
        raise DlxError(f"model.init_from: {path} is not a dlx run directory (no {CONFIG_FILE}) nor a checkpoint file")
    run = Run(path)
    for candidate in (run.best_checkpoint, run.last_checkpoint):
        if candidate.is_file():
            return candidate
    raise DlxError(f"model.init_from: {path} has no checkpoint ({run.best_checkpoint.name} or "
                   f"{run.last_checkpoint.name} in {run.checkpoint_dir})")  # fmt: skip


def read_state_dict(path: Path, what: str = "model.init_from") -> dict[str, torch.Tensor]:
    """A model state dict from a dlx checkpoint (its ``model`` entry) or a plain ``torch.save(state_dict)``."""
    state = read_torch_file(path, f"{what}:")  # tensors only: no code runs on load
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DlxError(f"{what}: {path} holds no model weights (a dlx checkpoint or a saved state_dict)")
    return state


@torch.no_grad()
def load_matching(model: nn.Module, source: dict[str, torch.Tensor], path: str) -> LoadReport:
    """Copy every source tensor whose name and shape match into ``model``; report the rest."""
    report = LoadReport(path)
    own = model.state_dict(keep_vars=True)
    for name, target in own.items():
        if name not in source:
            report.missing.append(name)
            continue
        value = source[name]
        if value.shape != target.shape:
            report.skipped[name] = f"{_dims(value)} -> {_dims(target)}"
            continue
        target.copy_(value.to(dtype=target.dtype, device=target.device))
        report.loaded.append(name)
    report.unused = [name for name in source if name not in own]
    return report


def pretrained_state_dict(weights: Any) -> tuple[dict[str, torch.Tensor], Path]:
    """torchvision's weights from the torch hub cache, downloaded there first when online."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file = folder / os.path.basename(urlparse(weights.url).path)
    if not file.is_file():
        try:
            with socket_timeout(DOWNLOAD_TIMEOUT_S):
                torch.hub.download_url_to_file(weights.url, str(file), progress=True)
        except Exception as e:
            raise DlxError(
                f"model.weights: {file.name} is not in {folder} and cannot be downloaded ({first_line(e)}); "
                f"put {weights.url} at {file}"
            ) from None
    state = read_state_dict(file, "model.weights")
    return rename_torchvision_keys(state), file


def nothing_loaded(report: LoadReport, model: nn.Module, key: str, limit: int = 3) -> DlxError:
    """The one-line error for a source of which no tensor fits the model (training would start from scratch)."""
    why = []
    if report.skipped:
        why.append("first mismatches: " + ", ".join(f"{k} {v}" for k, v in list(report.skipped.items())[:limit]))
    if report.unused:
        own = next(iter(model.state_dict()), None)
        names = ", ".join(map(repr, report.unused[:limit])) + (", ..." if len(report.unused) > limit else "")
        why.append(f"names like {names} not in the model" + (f" (its look like {own!r})" if own else ""))
    if not why:
        why.append("the file holds no tensors")
    return DlxError(f"model.{key}: {report.path}: no tensor matches this model ({'; '.join(why)})")


def load_initial_weights(model: nn.Module, cfg: ExperimentConfig) -> LoadReport | None:
    """Apply ``model.init_from`` or ``model.weights`` to a freshly built and initialized model.

    A source of which not one tensor fits is a DlxError: training would silently start from scratch.
    """
    m = cfg.model
    if m.init_from is not None:
        path = checkpoint_path(m.init_from)
        report = load_matching(model, read_state_dict(path), str(path))
        if not report.loaded:
            raise nothing_loaded(report, model, "init_from")
        return report
    if m.weights is not None:
        arch = torchvision_arch(m.name, cfg.regularization.batch_norm)
        assert arch is not None  # config validation guarantees it
        weights = resolve_weights(arch, m.weights)
        state, file = pretrained_state_dict(weights)
        report = load_matching(model, state, str(file))
        if not report.loaded:
            raise nothing_loaded(report, model, "weights")
        report.weights = str(weights)
        return report
    return None


# ---------------------------------------------------------------------------- freezing and the head


def matches(name: str, patterns: list[str]) -> bool:
    """``features.*`` matches ``features.0.weight``; a bare module name ``features`` matches its parameters too."""
    return any(fnmatchcase(name, p) or fnmatchcase(name, p + ".*") for p in patterns)


def _unmatched(key: str, patterns: list[str], names: list[str]) -> None:
    for pattern in patterns:
        if not any(matches(n, [pattern]) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise DlxError(
                f"model.{key}: {pattern!r} matches no parameter; names look like {names[0]!r} "
                f"(top-level modules: {', '.join(tops)})"
            )


_NORMS = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class Transfer:
    """What ``prepare`` did beyond building the model, and what ``fit`` needs of it."""

    report: LoadReport | None = None
    frozen: list[str] = field(default_factory=list)  # parameter names
    frozen_parameters: int = 0  # their element count
    frozen_norms: list[nn.Module] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)

    def train_mode(self, model: nn.Module) -> None:
        """``model.train()``, except frozen batch-norm layers, whose running statistics must not move."""
        model.train()
        for norm in self.frozen_norms:
            norm.eval()

    def parameters(self, model: nn.Module, head_lr: float | None) -> list[Any]:
        """What the optimizer gets: trainable parameters only; two groups when the head has its own rate."""
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if head_lr is None:
            return [p for _, p in trainable]
        head = set(self.head)
        return [
            {"params": [p for n, p in trainable if n not in head]},
            {"params": [p for n, p in trainable if n in head], "lr": head_lr},
        ]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.report is not None:
            out["init_from"] = self.report.to_dict()
        if self.frozen:
            out["frozen"] = {
                "patterns": self.patterns,
                "tensors": len(self.frozen),
                "parameters": self.frozen_parameters,
            }
        return out

    def lines(self) -> list[str]:
        out = self.report.lines() if self.report is not None else []
        if self.frozen:
            out.append(f"[bold]frozen[/] {self.frozen_parameters:,} parameters in {len(self.frozen)} tensors "
                       f"({', '.join(self.patterns)}); {len(self.frozen_norms)} batch-norm layers in eval mode")  # fmt: skip
        if self.head:
            out.append(f"[bold]head[/] {len(self.head)} tensors with their own learning rate")
        return out


def apply(model: nn.Module, cfg: ExperimentConfig) -> Transfer:
    """Load initial weights, freeze, and find the head, as ``cfg.model`` says; DlxError for what cannot be done."""
    m = cfg.model
    result = Transfer(report=load_initial_weights(model, cfg), patterns=list(m.freeze))
    names = [n for n, _ in model.named_parameters()]
    _unmatched("freeze", m.freeze, names)
    _unmatched("head", m.head, names)
    for name, p in model.named_parameters():
        if matches(name, m.freeze):
            p.requires_grad_(False)
            result.frozen.append(name)
            result.frozen_parameters += p.numel()
    if m.freeze and len(result.frozen) == len(names):
        raise DlxError("model.freeze: the patterns freeze every parameter; nothing would train")
    for module_name, module in model.named_modules():
        if isinstance(module, _NORMS):
            own = list(module.parameters(recurse=False))
            if (own and not any(p.requires_grad for p in own)) or (not own and matches(module_name, m.freeze)):
                result.frozen_norms.append(module)
    if m.head:
        result.head = [n for n in names if matches(n, m.head) and n not in result.frozen]
        if not result.head:
            raise DlxError("model.head: every parameter it matches is frozen; nothing would use optimizer.head_lr")
        if len(result.head) + len(result.frozen) == len(names):
            raise DlxError("model.head: matches every trainable parameter; use optimizer.lr instead of head_lr")
    return result
