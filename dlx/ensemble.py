"""``dlx ensemble``: several trained runs vote on the test set, as the book's and MNIST's best results do.

Members are finished runs (any architectures) on the same test images with the same class list; anything else
is refused with the reason. ``--top K --by val_acc`` picks members by validation, never by test. ``mean``
averages the members' softmax probabilities; ``vote`` takes the majority of their predictions (a tie goes to
the class with the higher mean probability). The ensemble is written as a run folder (kind ``ensemble``:
members, figures, gallery, confusion matrix) that ``dlx compare`` lists beside its members.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
import yaml

from dlx.errors import DlxError
from dlx.runs import Run, create_run, find_runs

METHODS = ("mean", "vote")
BY = {"val_acc": True, "val_loss": False}  # selection keys (validation only) and whether higher is better


def members_of(paths: list[Path], top: int | None, by: str) -> list[Run]:
    """The completed runs below ``paths``; with ``top``, the best ``top`` of them by validation."""
    if by not in BY:
        raise DlxError(f"--by {by!r}: choose {' or '.join(BY)} (members are chosen by validation, never by test)")
    runs: list[Run] = []
    for path in paths:
        found, _ = find_runs(path)
        runs += [Run(p) for p in found]
    summaries = {r.path: r.read_summary() for r in runs}  # each read once
    done = [r for r in runs if summaries[r.path].get("status") == "completed" and summaries[r.path].get("kind") is None]
    if top is not None:
        key = "best_val_acc" if by == "val_acc" else "best_val_loss"
        scored = [r for r in done if isinstance(summaries[r.path].get(key), (int, float))]
        if len(scored) < len(done):
            raise DlxError(f"--top {top} --by {by}: {len(done) - len(scored)} run(s) have no validation figure "
                           f"({key}); give the runs themselves instead")  # fmt: skip
        done = sorted(scored, key=lambda r: summaries[r.path][key], reverse=BY[by])[:top]
    if len(done) < 2:
        raise DlxError(f"an ensemble needs 2 or more completed runs; found {len(done)} in {', '.join(map(str, paths))}")
    return done


def member_probabilities(run: Run) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], Any]:
    """A member's softmax probabilities and the labels of its test split (its best weights, its preprocessing)."""
    from dlx.assess import load_trained, predict_logits
    from dlx.build import AMP_DTYPES, make_batches

    _, setup = load_trained(run.path)
    cfg = setup.config
    logits = predict_logits(setup.model, make_batches(setup, setup.test), AMP_DTYPES[cfg.train.precision],
                            setup.device)  # fmt: skip
    fingerprint = hashlib.sha256(setup.test.images.cpu().numpy().tobytes()).hexdigest()
    info = {"dataset": cfg.data.dataset, "classes": list(setup.data.classes), "images": fingerprint}
    return torch.softmax(logits, dim=1), setup.test.labels.cpu(), info, setup


def ensemble(
    paths: list[Path],
    *,
    top: int | None = None,
    by: str = "val_acc",
    method: str = "mean",
    name: str = "ensemble",
    runs_dir: Path | None = None,
) -> dict[str, Any]:
    """Combine the runs' test predictions; returns (and writes) the ensemble's summary."""
    if method not in METHODS:
        raise DlxError(f"--method {method!r}: choose mean or vote")
    runs = members_of(paths, top, by)
    probs, members, first = [], [], None
    for run in runs:
        p, labels, info, setup = member_probabilities(run)
        if first is None:
            first = (labels, info, setup)
        elif info["classes"] != first[1]["classes"] or info["dataset"] != first[1]["dataset"]:
            raise DlxError(f"{run.path}: {info['dataset']} with classes {info['classes'][:5]}... is not "
                           f"{first[1]['dataset']} with {first[1]['classes'][:5]}...: members must share "
                           "dataset and classes")  # fmt: skip
        elif info["images"] != first[1]["images"] or not torch.equal(labels, first[0]):
            raise DlxError(f"{run.path}: its test split is not the same images as {runs[0].path}'s "
                           "(data.test_size or the data differ)")  # fmt: skip
        probs.append(p)
        s = run.read_summary()
        acc = (p.argmax(1) == labels).float().sum().item() / len(labels)
        members.append({"run": str(run.path), "model": (s.get("model") or {}).get("name"), "test_acc": acc,
                        "best_val_acc": s.get("best_val_acc"), "parameters": s.get("parameters")})  # fmt: skip
    assert first is not None
    labels, info, setup = first
    stacked = torch.stack(probs)  # members x images x classes
    mean = stacked.mean(0)
    if method == "mean":
        preds = mean.argmax(1)
    else:
        votes = torch.nn.functional.one_hot(stacked.argmax(2), mean.shape[1]).sum(0).float()
        preds = (votes + mean * 1e-3).argmax(1)  # a tie goes to the higher mean probability
    n = len(labels)
    correct = int((preds == labels).sum())
    loss = -mean[torch.arange(n), labels].clamp_min(1e-12).log().mean().item()
    return _write(name, runs_dir or Path(setup.config.output.runs_dir), members, method, by, top, info, setup,
                  preds, labels, correct / n, loss)  # fmt: skip


def _write(name: str, runs_dir: Path, members: list[dict[str, Any]], method: str, by: str, top: int | None,
           info: dict[str, Any], setup: Any, preds: torch.Tensor, labels: torch.Tensor, acc: float,
           loss: float) -> dict[str, Any]:  # fmt: skip
    from dlx import report
    from dlx.record import now

    run = create_run(runs_dir, name)
    run.acquire()
    try:
        config = {"name": name, "kind": "ensemble", "method": method, "members": [m["run"] for m in members],
                  "selected": {"top": top, "by": by} if top else None, "data": {"dataset": info["dataset"]}}  # fmt: skip
        run.write_config(yaml.safe_dump(config, sort_keys=False))
        best = max(m["test_acc"] for m in members)
        summary = {
            "status": "completed", "kind": "ensemble", "name": name, "run_id": run.path.name, "run_dir": str(run.path),
            "model": {"name": f"ensemble-{method}", "width": 1.0, "depth": 1.0}, "dataset": info["dataset"],
            "num_classes": len(info["classes"]), "classes": info["classes"], "method": method, "members": members,
            "parameters": sum(int(m["parameters"] or 0) for m in members), "test_acc": acc,
            "test_loss": loss if math.isfinite(loss) else None, "best_member_test_acc": best,
            "test_images": len(labels), "started_at": now(), "ended_at": now(), "epochs": 0, "epochs_completed": 0,
        }  # fmt: skip
        report.save_misclassified(setup.test.images.cpu(), labels, preds, info["classes"], run.path / "misclassified.png",
                                  setup.config.output.gallery_size)  # fmt: skip
        report.save_confusion(labels, preds, info["classes"], run.path / "confusion.png")
        run.write_summary(summary)
    finally:
        run.release()
    return summary
