"""After training: ``dlx eval`` measures a finished run's weights again, on any split, at any precision.

The model is rebuilt from the run's resolved config.yaml (the same builder as training), its checkpoint
(best.pt, or last.pt) is loaded with ``weights_only=True``, and the split is evaluated with the run's own
preprocessing and batches: on the test split with the run's precision this reproduces the recorded test
accuracy exactly. Everything measured lands in ``<run>/eval/<split>-<checkpoint>-<precision>/``: eval.json, a
gallery of misclassified images and the confusion matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dlx.errors import DlxError
from dlx.runs import Run, write_json_atomic

SPLITS = ("test", "val")
CHECKPOINTS = ("best", "last")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Trained:
    """A finished run's folder and the checkpoint chosen from it."""

    run: Run
    checkpoint: Path


def find_trained(target: str | Path, checkpoint: str = "best") -> Trained:
    """A run folder (its best.pt or last.pt) or a checkpoint file inside one; one-line errors otherwise."""
    if checkpoint not in CHECKPOINTS:
        raise DlxError(f"--checkpoint {checkpoint!r}: choose best or last")
    path = Path(target)
    if path.is_file() and path.suffix == ".pt":
        run_dir = path.parent.parent
        if not (run_dir / "config.yaml").is_file():
            raise DlxError(f"{path}: not inside a run folder (no {run_dir / 'config.yaml'})")
        return Trained(Run(run_dir), path)
    if not (path / "config.yaml").is_file():
        raise DlxError(f"{path}: not a run folder (no config.yaml) nor a checkpoint file")
    run = Run(path)
    chosen = run.best_checkpoint if checkpoint == "best" else run.last_checkpoint
    if checkpoint == "best" and not chosen.is_file() and run.last_checkpoint.is_file():
        chosen = run.last_checkpoint  # a run without validation has no best.pt: its last weights were tested
    if not chosen.is_file():
        raise DlxError(f"{path}: no checkpoints/{chosen.name}; the run never finished an epoch")
    return Trained(run, chosen)


def load_trained(
    target: str | Path, checkpoint: str = "best", changes: list[str] | None = None, device: Any = None
) -> tuple[Trained, Any]:
    """A finished run rebuilt in this one process (its config.yaml, ``changes`` applied as --set would, the data
    as it trained on) with the chosen checkpoint's weights loaded: what eval, predict, export and ensemble use.
    ``device`` overrides where the model goes (export: the CPU)."""
    from dlx.build import prepare
    from dlx.checkpoint import load_checkpoint, state_dict_mismatches
    from dlx.config import apply_overrides, config_from_dict, load_run_config

    trained = find_trained(target, checkpoint)
    cfg = load_run_config(trained.run.config_path)
    if changes:
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), changes), str(trained.run.config_path))
    cfg = cfg.with_train(devices=1)
    setup = prepare(cfg, download=False, device=device, measuring=True)
    state = load_checkpoint(trained.checkpoint, map_location=setup.device).get("model")
    if not isinstance(state, dict):
        raise DlxError(f"{trained.checkpoint}: holds no model weights")
    problems = state_dict_mismatches(setup.model.state_dict(), state)
    if problems:
        raise DlxError(f"{trained.checkpoint} does not fit the run's model: {problems}")
    setup.model.load_state_dict(state)
    return trained, setup


def evaluate_run(
    target: str | Path,
    *,
    split: str = "test",
    checkpoint: str = "best",
    precision: str | None = None,
    overrides: list[str] | None = None,
    output: Path | None = None,
    pictures: bool = True,
    tta: bool = False,
    data_file: Path | None = None,
) -> dict[str, Any]:
    """Measure a trained run's weights on a split; returns (and writes) eval.json's content.

    ``data_file`` (--data) or ``data.*`` overrides: another dataset's split, through the run's own normalization.
    """
    from dlx.build import AMP_DTYPES, batches_for, make_batches

    if split not in SPLITS:
        raise DlxError(f"--split {split!r}: choose test or val")
    if precision is not None and precision not in PRECISIONS:
        raise DlxError(f"--precision {precision!r}: choose fp32, bf16 or fp16")
    data_changes = [c for c in overrides or [] if _loads_other_images(c)]
    changes = [c for c in overrides or [] if c not in data_changes]
    if precision is not None:
        changes.append(f"train.precision={precision}")
    trained, setup = load_trained(target, checkpoint, changes)
    cfg = setup.config
    other = None
    if data_file is not None or data_changes:
        other = other_data(setup, data_file, data_changes)
        data = other.val if split == "val" else other.test
        batches = batches_for(cfg, setup.data, data) if data is not None else None  # the run's normalization
    else:
        data = setup.val if split == "val" else setup.test
        batches = make_batches(setup, data) if data is not None else None
    if data is None or batches is None:
        raise DlxError(f"--split val: {trained.run.path} has no validation split (data.val_size: 0)")
    views = tta_views(cfg.augment.hflip) if tta else None
    logits = predict_logits(setup.model, batches, AMP_DTYPES[cfg.train.precision], setup.device, views)
    labels = data.labels.cpu()
    result = measures(logits, labels, setup.data.classes)
    name = f"{split}-{trained.checkpoint.stem}-{cfg.train.precision}" + ("-tta" if tta else "")
    if other is not None:
        name += f"-{other.name}"
    folder = output or trained.run.path / "eval" / name
    result.update(run=str(trained.run.path), checkpoint=str(trained.checkpoint), split=split,
                  precision=cfg.train.precision, images=int(labels.shape[0]), folder=str(folder),
                  tta=views, data=other.config if other else None)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "eval.json", result)
    if pictures:
        from dlx import report

        preds = logits.argmax(1)
        report.save_misclassified(data.images.cpu(), labels, preds, setup.data.classes, folder / "misclassified.png",
                                  cfg.output.gallery_size)  # fmt: skip
        report.save_confusion(labels, preds, setup.data.classes, folder / "confusion.png")
    return result


@dataclass
class OtherData:
    """Another dataset's splits for a run's model: --data FILE or --set data.*."""

    name: str  # in the eval folder's name
    config: dict[str, Any]  # its data section, as eval.json records it
    val: Any
    test: Any


def other_data(setup: Any, data_file: Path | None, data_changes: list[str]) -> OtherData:
    """The data a file's ``data:`` section (or a bare data section) describes, ``data.*`` changes applied; its
    classes and image shape must be the run's: the model answers only what it was trained on."""
    from dlx.build import split_data
    from dlx.config import apply_overrides, config_from_dict, read_experiment
    from dlx.data.datasets import load_data

    run_cfg = setup.config.to_dict()
    label = str(data_file) if data_file is not None else "--set"
    if data_file is not None:
        if not Path(data_file).is_file():
            raise DlxError(f"--data {data_file}: no such file")
        read = read_experiment(data_file)
        section = read.get("data") if "data" in read else {k: v for k, v in read.items() if k != "name"}
        if not isinstance(section, dict):
            raise DlxError(f"--data {data_file}: no data: section (an experiment file, or a data section)")
        run_cfg["data"] = section
    cfg = config_from_dict(apply_overrides(run_cfg, data_changes), label)
    data = load_data(cfg.data, download=False)
    own = setup.data
    if list(data.classes) != list(own.classes):
        raise DlxError(f"{label}: classes {_few(data.classes)} are not the run's {_few(own.classes)} (names and "
                       "order): the model answers only the classes it was trained on")  # fmt: skip
    shape, want = tuple(data.train_images.shape[1:]), tuple(own.train_images.shape[1:])
    if shape != want:
        raise DlxError(f"{label}: images are {'x'.join(map(str, shape))}, the run's model takes "
                       f"{'x'.join(map(str, want))}; set data.channels / data.image_size")  # fmt: skip
    _, val, test = split_data(data, cfg)
    name = Path(data_file).stem if data_file is not None else "data"
    return OtherData(name, cfg.data.model_dump(mode="json"), val, test)


def _loads_other_images(change: str) -> bool:
    """``data.path=x`` or ``data.dataset=y`` (other images); ``data.eval_batch_size=500`` is not."""
    from dlx.data.datasets import LOADING_KEYS

    key = change.split("=", 1)[0].strip()
    return key.startswith("data.") and key.removeprefix("data.") in LOADING_KEYS


def _few(names: list[str], limit: int = 6) -> str:
    return "[" + ", ".join(names[:limit]) + (f", ... {len(names)} in all" if len(names) > limit else "") + "]"


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    batches: Any,
    amp: torch.dtype | None,
    device: torch.device,
    views: list[str] | None = None,
) -> torch.Tensor:
    """Every image's logits (float32, on the CPU), in the split's order, in eval mode.

    ``views`` (test-time augmentation, see ``tta_views``): the log of the softmax averaged over those views of
    each image, which argmax and cross-entropy read like logits.
    """
    model.eval()
    out = []
    for x, _ in batches:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            if not views:
                out.append(model(x).float().cpu())
                continue
            probs = torch.stack([torch.softmax(model(view(x, v)).float(), dim=1) for v in views]).mean(0)
            out.append(probs.clamp_min(1e-12).log().cpu())
    return torch.cat(out)


def tta_views(hflip: bool) -> list[str]:
    """What test-time augmentation averages: the image, shifted one pixel each way, and mirrored only when the
    run trained with augment.hflip (a mirrored digit is another symbol: no flips for digits)."""
    return ["identity", "left", "right", "up", "down", *(["hflip"] if hflip else [])]


def view(x: torch.Tensor, name: str) -> torch.Tensor:
    """One view of a batch [N, C, H, W]; a shift repeats the edge row or column it uncovers."""
    if name == "identity":
        return x
    if name == "hflip":
        return x.flip(3)
    pad, keep = {
        "right": ((1, 0, 0, 0), (slice(None), slice(None, -1))),
        "left": ((0, 1, 0, 0), (slice(None), slice(1, None))),
        "down": ((0, 0, 1, 0), (slice(None, -1), slice(None))),
        "up": ((0, 0, 0, 1), (slice(1, None), slice(None))),
    }[name]
    return F.pad(x, pad, mode="replicate")[:, :, keep[0], keep[1]]


def measures(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], pairs: int = 5) -> dict[str, Any]:
    """Loss, top-1/top-5 accuracy, per-class precision and recall, the most confused (true, predicted) pairs."""
    n, k = logits.shape
    loss = F.cross_entropy(logits, labels, reduction="sum").item() / n
    preds = logits.argmax(1)
    top5 = logits.topk(min(5, k), dim=1).indices.eq(labels[:, None]).any(1).float().mean().item()
    cm = torch.zeros(k, k, dtype=torch.long)
    cm.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for i, name in enumerate(classes[:k]):
        said, truly = int(cm[:, i].sum()), int(cm[i].sum())
        per_class[name] = {"precision": cm[i, i].item() / said if said else None,
                           "recall": cm[i, i].item() / truly if truly else None, "images": truly}  # fmt: skip
    off = cm.clone()
    off.fill_diagonal_(0)
    top = torch.topk(off.flatten(), min(pairs, off.numel())).indices.tolist()
    confused = [{"true": classes[i // k], "predicted": classes[i % k], "count": int(off.flatten()[i])}
                for i in top if off.flatten()[i] > 0]  # fmt: skip
    correct = int((preds == labels).sum())
    return {"loss": loss, "acc": correct / n, "top5_acc": top5, "correct": correct, "per_class": per_class,
            "most_confused": confused}  # fmt: skip
