"""Training: ``fit`` is the loop over what ``dlx.build.prepare`` made. Read it top to bottom."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlx import checkpoint as ckpt
from dlx import provenance
from dlx.build import AMP_DTYPES, Setup, make_batches
from dlx.data.loader import Batches
from dlx.diagnose import diagnose
from dlx.errors import DlxError
from dlx.models.layers import aux_loss, main_logits
from dlx.optim import build_optimizer
from dlx.progress import Reporter
from dlx.runs import Run
from dlx.schedule import build_schedule


class Diverged(DlxError):
    """The loss became NaN or infinite; the run is stopped and marked ``diverged``."""


def seed_epoch(seed: int, epoch: int) -> None:
    """All randomness of an epoch (order, augmentation, dropout) derives from (seed, epoch).

    That is what makes a resumed run replay an interrupted epoch exactly.
    """
    s = (seed * 1_000_003 + epoch) % (2**63)
    torch.manual_seed(s)
    random.seed(s)


def penalty(model: nn.Module, l1: float, l2: float) -> torch.Tensor | float:
    """The book's weight decay: l2/2 * sum w^2 (+ l1 * sum |w|) over weights, not biases or norms."""
    if not l1 and not l2:
        return 0.0
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    total: torch.Tensor | float = 0.0
    if l2:
        total = total + 0.5 * l2 * sum(w.float().pow(2).sum() for w in weights)
    if l1:
        total = total + l1 * sum(w.float().abs().sum() for w in weights)
    return total


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Batches, amp: torch.dtype | None, device: torch.device, want_preds: bool = False
) -> tuple[float, float, torch.Tensor | None]:
    """Mean loss, accuracy and (optionally) every prediction over a split, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    preds = []
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        p = logits.argmax(1)
        correct += (p == y).sum()
        if want_preds:
            preds.append(p)
    n = len(batches.split)
    return loss_sum.item() / n, correct.item() / n, (torch.cat(preds).cpu() if want_preds else None)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _improved(monitor: str, row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    if monitor == "val_loss":
        return row["val_loss"] < best["val_loss"]
    # Accuracy ties are broken by the lower loss.
    return (row["val_acc"], -row["val_loss"]) > (best["val_acc"], -best["val_loss"])


@dataclass
class State:
    """What a checkpoint restores: where training stands."""

    epoch: int = 0  # epochs completed
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # the validation row of the best epoch
    evals_without_improvement: int = 0
    train_seconds: float = 0.0


def fit(setup: Setup, run: Run, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train ``setup.model`` as ``setup.config`` says, writing everything into ``run``. Returns the summary."""
    cfg, device, model = setup.config, setup.device, setup.model
    amp = AMP_DTYPES[cfg.train.precision]
    reporter = Reporter(quiet=quiet)

    train_batches = make_batches(setup, setup.train, train=True)
    val_batches = make_batches(setup, setup.val) if setup.val else None
    test_batches = make_batches(setup, setup.test)

    params = setup.transfer.parameters(model, cfg.optimizer.head_lr)  # frozen ones left out; the head's own group
    optimizer = build_optimizer(
        cfg.optimizer.name, params, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.args
    )
    schedule = build_schedule(
        cfg.schedule.name,
        optimizer,
        epochs=cfg.train.epochs,
        steps_per_epoch=len(train_batches),
        warmup_epochs=cfg.schedule.warmup_epochs,
        args=cfg.schedule.args,
    )
    # fp16 needs loss scaling so small gradients do not flush to zero; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    step_model = torch.compile(model) if cfg.train.compile else model

    state = State()
    wall_start, wall_before = time.perf_counter(), 0.0
    summary: dict[str, Any] = {
        "status": "running",
        "name": cfg.name,
        "run_id": run.path.name,
        "run_dir": str(run.path),
        "model": {"name": cfg.model.name, "width": cfg.model.width, "depth": cfg.model.depth},
        "dataset": cfg.data.dataset,
        "seed": cfg.seed,
        "parameters": setup.parameters,
        "flops_per_image": setup.flops_per_image,
        "train_images": len(setup.train),
        "val_images": len(setup.val) if setup.val else 0,
        "test_images": len(setup.test),
        "epochs": cfg.train.epochs,
        "started_at": _now(),
        **provenance.describe(device),
        **setup.transfer.summary(),
    }
    if resume:
        last = ckpt.load_checkpoint(run.last_checkpoint, map_location=device)
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        schedule.load_state_dict(last["schedule"])
        scaler.load_state_dict(last["scaler"])
        ckpt.set_rng_state(last["rng"])
        state = State(**last["state"])
        previous = run.read_summary()
        summary["started_at"] = previous.get("started_at", summary["started_at"])
        wall_before = float(previous.get("wall_seconds", 0.0))
        summary["resumed"] = [*previous.get("resumed", []), {"at": _now(), "from_epoch": state.epoch}]
        run.write_metrics(state.history)  # drop rows of an epoch the interrupted process did not checkpoint
    else:
        run.write_config(cfg.to_yaml())
    run.write_summary(summary)

    def save_last() -> None:
        ckpt.save_checkpoint(
            run.last_checkpoint,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": ckpt.rng_state(),
                "state": state.__dict__,
                "config": cfg.to_dict(),
            },
        )

    def finish(status: str, **extra: Any) -> dict[str, Any]:
        summary.update(status=status, ended_at=_now(), epochs_completed=state.epoch, **extra)
        summary["train_seconds"] = round(state.train_seconds, 3)
        summary["wall_seconds"] = round(wall_before + time.perf_counter() - wall_start, 3)
        if state.best is not None:
            summary.update(best_epoch=state.best["epoch"], best_val_acc=state.best["val_acc"],
                           best_val_loss=state.best["val_loss"])  # fmt: skip
        if state.history:
            last_row = state.history[-1]
            summary.update(final_train_loss=last_row["train_loss"], final_train_acc=last_row["train_acc"])
            rates = [r["images_per_s"] for r in state.history]
            summary["images_per_s"] = round(sum(rates) / len(rates), 1)
        summary["diagnosis"] = diagnose(state.history)  # over/underfitting, also shown by dlx compare
        run.write_summary(summary)
        return summary

    epochs = cfg.train.epochs
    try:
        reporter.start(cfg, setup, run, state.epoch)
        for line in setup.transfer.lines():
            reporter.note(line)
        for epoch in range(state.epoch, epochs):
            seed_epoch(cfg.seed, epoch)
            setup.transfer.train_mode(model)  # model.train(), but frozen batch norms keep their statistics
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            reporter.epoch_start(epoch, len(train_batches))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(train_batches):
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    out = step_model(x)
                    # Auxiliary heads (GoogLeNet) add their weighted loss; loss and accuracy report the main head.
                    logits = main_logits(out)
                    loss = F.cross_entropy(logits.float(), y)
                objective = loss + penalty(model, cfg.regularization.l1, cfg.regularization.l2) + aux_loss(out, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(objective).backward()
                if cfg.train.grad_clip is not None:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                schedule.after_step()
                state.step += 1
                # Accumulate on the device; reading a value forces a sync, so do it only every log_every steps.
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                if (i + 1) % cfg.train.log_every == 0 or i + 1 == len(train_batches):
                    mean_loss = loss_sum.item() / seen
                    if not math.isfinite(mean_loss):
                        raise Diverged(
                            f"loss became {mean_loss} in epoch {epoch + 1}, step {i + 1} "
                            f"(lr {optimizer.param_groups[0]['lr']:.3g}); try a lower optimizer.lr, "
                            f"set train.grad_clip, or use precision fp32"
                        )
                    reporter.step(i + 1, mean_loss, correct.item() / seen, seen / (time.perf_counter() - t0))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            state.train_seconds += seconds

            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": loss_sum.item() / seen,
                "train_acc": correct.item() / seen,
                "val_loss": None,
                "val_acc": None,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "images_per_s": round(seen / seconds, 1),
            }
            evaluate_now = val_batches is not None and ((epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == epochs)
            improved = False
            if evaluate_now:
                t1 = time.perf_counter()
                row["val_loss"], row["val_acc"], _ = evaluate(step_model, val_batches, amp, device)
                row["eval_seconds"] = round(time.perf_counter() - t1, 3)
                schedule.after_validation(row["val_loss"])
                improved = _improved(cfg.train.monitor, row, state.best)
                if improved:
                    state.best = {"epoch": epoch + 1, "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
                    state.evals_without_improvement = 0
                    ckpt.save_checkpoint(run.best_checkpoint, {"model": model.state_dict(), "epoch": epoch + 1,
                                                               "metrics": row})  # fmt: skip
                else:
                    state.evals_without_improvement += 1
            if cfg.train.test_every_epoch:
                row["test_loss"], row["test_acc"], _ = evaluate(step_model, test_batches, amp, device)
            state.epoch = epoch + 1
            state.history.append(row)
            save_last()
            run.write_metrics(state.history)
            summary["epochs_completed"] = state.epoch
            run.write_summary(summary)
            reporter.epoch_end(row, improved)
            patience = cfg.train.early_stopping
            if patience is not None and state.evals_without_improvement >= patience:
                summary["early_stopped"] = True
                reporter.note(f"early stopping: no improvement in {patience} evaluations")
                break
    except KeyboardInterrupt:
        reporter.stop()
        finish("interrupted", message=f"interrupted; continue with: dlx train --resume {run.path}")
        raise
    except Diverged as e:
        reporter.stop()
        finish("diverged", message=str(e))
        raise
    except BaseException as e:
        reporter.stop()
        finish("failed", message=f"{type(e).__name__}: {e}")
        raise
    reporter.stop()

    # Test with the best-by-validation weights (the last ones when there was no validation).
    if run.best_checkpoint.exists():
        model.load_state_dict(ckpt.load_checkpoint(run.best_checkpoint, map_location=device)["model"])
    test_loss, test_acc, preds = evaluate(model, test_batches, amp, device, want_preds=True)
    if cfg.output.plots:
        write_report(setup, run, preds, cfg.output.gallery_size, state.history)
    result = finish("completed", test_loss=test_loss, test_acc=test_acc, message="")
    reporter.final(result)
    return result


def write_report(setup: Setup, run: Run, preds: torch.Tensor, gallery_size: int, history: list[dict]) -> None:
    from dlx import report  # matplotlib is imported only when pictures are drawn

    images, labels = setup.test.images.cpu(), setup.test.labels.cpu()
    report.save_misclassified(images, labels, preds, setup.data.classes, run.path / "misclassified.png", gallery_size)
    report.save_confusion(labels, preds, setup.data.classes, run.path / "confusion.png")
    report.save_curves(history, run.path / "curves.png")
