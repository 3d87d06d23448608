"""Training: ``fit`` is a short loop over named phases. Read it top to bottom.

``dlx.build`` turns the config into objects (``prepare`` -> Setup, ``build_training`` -> Training);
``dlx.checkpoint.Checkpointer`` keeps last.pt / best.pt; ``dlx.record.RunRecorder`` owns summary.json
and writes the final status from ``fit``'s ``finally``, however the process ends.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlx import provenance
from dlx.build import Setup, Training, build_training
from dlx.checkpoint import Checkpointer
from dlx.data.loader import Batches
from dlx.distributed import SINGLE, World
from dlx.errors import DlxError
from dlx.models.layers import aux_loss, main_logits
from dlx.progress import Reporter
from dlx.record import RunRecorder, extension_lines, resume_lines
from dlx.runs import DiskFull, Run
from dlx.signals import Terminated, signals_deferred, sigterm_as_interrupt


class Diverged(DlxError):
    """The loss became NaN, infinite or exploded; the run is stopped and marked ``diverged``."""


# A running loss above EXPLODED x ln(classes) (the cross-entropy of a uniform guess: 23,026 for 10 classes)
# has diverged: no run comes back from there, it only wastes the remaining epochs.
EXPLODED = 1e4


def check_loss(mean_loss: float, classes: int, precision: str, where: str, lr: float) -> None:
    """Raise Diverged for a NaN, infinite or exploded running loss, with what to try."""
    limit = EXPLODED * math.log(max(classes, 2))
    if math.isfinite(mean_loss) and mean_loss <= limit:
        return
    what = (
        f"became {mean_loss}" if not math.isfinite(mean_loss) else f"exploded to {mean_loss:.3g} (above {limit:,.0f})"
    )
    tips = "try a lower optimizer.lr or set train.grad_clip" + (
        ", or use precision fp32" if precision != "fp32" else ""
    )
    raise Diverged(f"loss {what} in {where} (lr {lr:.3g}); {tips}")


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
    cfg, world = setup.config, setup.world
    loop = build_training(setup)
    checkpoints = Checkpointer(run, setup.model, loop.optimizer, loop.schedule, loop.scaler, cfg.to_dict(),
                               classes=setup.data.classes, world=world, steps_per_epoch=loop.steps_per_epoch,
                               lr_factor=loop.lr_factor)  # fmt: skip
    state = State(**checkpoints.restore(setup.device)) if resume else State()
    reporter = Reporter(quiet=quiet, silent=not world.main)  # one process prints: rank 0
    recorder = RunRecorder(run, setup, resume=resume, note=reporter.alert)
    status, extra = "failed", {}
    try:
        with sigterm_as_interrupt():
            recorder.start(cfg.to_yaml(), state, checkpoints.previous_world_size, checkpoints.extended_from)
            reporter.start(cfg, setup, run, state.epoch)
            for line in [
                *setup.data.notes,
                *setup.transfer.lines(),
                *resume_lines(checkpoints.previous_world_size, setup),
                *extension_lines(checkpoints.extended_from, setup, loop.optimizer.param_groups[0]["lr"]),
            ]:
                reporter.note(line)
            if cfg.train.compile:
                extra["compile_seconds"] = recorder.summary["compile_seconds"] = compile_now(setup, loop)
                reporter.note(f"torch.compile: {extra['compile_seconds']:.1f} s (not counted in any epoch's images/s)")
            # Process start to the first training step: imports, data, model, run folder (compile excluded above).
            extra["startup_seconds"] = round(provenance.process_age() - extra.get("compile_seconds", 0.0), 3)
            for epoch in range(state.epoch, cfg.train.epochs):
                steps: list[dict[str, Any]] = []
                row = train_one_epoch(setup, loop, state, epoch, reporter, steps)
                improved = measure(setup, loop, state, row, epoch)
                if improved:
                    checkpoints.save_best(epoch + 1, row)
                state.epoch = epoch + 1
                state.history.append(row)
                checkpoints.save_last(state.__dict__)
                recorder.epoch_done(state, steps)
                reporter.epoch_end(row, improved)
                if stop_early(cfg.train.early_stopping, state, reporter):
                    extra["early_stopped"] = True
                    break
            extra.update(final_test(setup, loop, run, checkpoints, state, recorder.steps))
            status = "completed"
    except Terminated:
        status, extra["message"] = "interrupted", f"terminated (SIGTERM); continue with: dlx train --resume {run.path}"
        raise
    except KeyboardInterrupt:
        status, extra["message"] = "interrupted", f"interrupted; continue with: dlx train --resume {run.path}"
        raise
    except Diverged as e:
        status, extra["message"] = "diverged", str(e)
        raise
    except DiskFull as e:  # the last good checkpoint is intact: free space and resume
        status, extra["message"] = "interrupted", f"{e}; free space, then continue with: dlx train --resume {run.path}"
        raise
    except BaseException as e:
        status, extra["message"] = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        with signals_deferred():  # a second Ctrl-C must not stop the final status from reaching the disk
            reporter.stop()
            summary = recorder.finish(status, state, checkpoints.epoch, **extra)
            if status == "interrupted":
                reporter.alert(extra["message"])
    reporter.final(summary)
    return summary


def train_one_epoch(
    setup: Setup,
    loop: Training,
    state: State,
    epoch: int,
    reporter: Reporter,
    steps: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One pass over the training split; returns the epoch's row (running figures, mean lr, speed).

    ``steps`` receives a row every train.log_every steps (metrics_steps.jsonl): the figures of the steps since
    the previous row, read at the moment the loop reads them anyway (for the progress line and divergence).

    Each optimizer step adds up the gradients of ``train.grad_accum`` micro-batches; with several processes
    DDP all-reduces them once per step (``no_sync`` for the others). Figures are summed over all processes.
    """
    cfg, device, model, world = setup.config, setup.device, setup.model, setup.world
    accum = cfg.train.grad_accum
    seed_epoch(cfg.seed, epoch, world.rank)
    loop.train.set_epoch(order_seed(cfg.seed, epoch))  # the same permutation on every rank; each takes its shard
    setup.transfer.train_mode(model)  # model.train(), but frozen batch norms keep their statistics
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr_sum, steps_per_epoch = 0, 0.0, loop.steps_per_epoch
    reporter.epoch_start(epoch, steps_per_epoch)
    synchronize(device)
    t0 = time.perf_counter()
    logged = (0.0, 0, 0, t0)  # loss sum, correct, images, time at the previous step row
    batches = iter(loop.train)
    for i in range(steps_per_epoch):
        lr = loop.optimizer.param_groups[0]["lr"]  # the rate this step trains with
        lr_sum += lr
        loop.optimizer.zero_grad(set_to_none=True)
        for k in range(accum):
            x, y = next(batches)
            # Only the last micro-batch's backward all-reduces the summed gradients.
            sync = k == accum - 1 or loop.ddp is None
            with contextlib.nullcontext() if sync else loop.ddp.no_sync():  # type: ignore[union-attr]
                with torch.autocast(device.type, dtype=loop.amp, enabled=loop.amp is not None):
                    out = loop.step_model(x)
                    logits = main_logits(out)  # loss and accuracy report the main head; aux heads add to the objective
                    loss = F.cross_entropy(logits.float(), y)
                objective = loss + penalty(model, cfg.regularization.l1, cfg.regularization.l2) + aux_loss(out, y)
                loop.scaler.scale(objective / accum).backward()
            # Accumulate on the device; reading a value forces a sync, so do it only every log_every steps.
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
        if cfg.train.grad_clip is not None:
            loop.scaler.unscale_(loop.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        loop.schedule.after_step()
        state.step += 1
        if (i + 1) % cfg.train.log_every == 0 or i + 1 == steps_per_epoch:
            total_loss, total_correct, total_seen = world.sum(loss_sum, correct, seen, device=device)
            mean_loss = total_loss / total_seen  # every rank sees the same figure: all stop together if it diverged
            check_loss(mean_loss, setup.data.num_classes, cfg.train.precision, f"epoch {epoch + 1}, step {i + 1}",
                       loop.optimizer.param_groups[0]["lr"])  # fmt: skip
            now = time.perf_counter()
            reporter.step(i + 1, mean_loss, total_correct / total_seen, total_seen / (now - t0))
            if steps is not None:
                steps.append(step_row(state.step, epoch + (i + 1) / steps_per_epoch, lr,
                                      (total_loss, total_correct, total_seen, now), logged))  # fmt: skip
                logged = (total_loss, total_correct, total_seen, now)
    synchronize(device)
    seconds = time.perf_counter() - t0
    state.train_seconds += seconds
    total_loss, total_correct, total_seen = world.sum(loss_sum, correct, seen, device=device)
    return {
        "epoch": epoch + 1,
        "train_loss": None,  # measure() fills train_* (eval mode, fixed sample) and val_*
        "train_acc": None,
        "val_loss": None,
        "val_acc": None,
        "running_loss": total_loss / total_seen,  # train mode, as the weights moved: dropout and augmentation on
        "running_acc": total_correct / total_seen,
        "lr": lr_sum / steps_per_epoch,  # the mean rate of the epoch's steps (first parameter group)
        "seconds": round(seconds, 3),
        "images_per_s": round(total_seen / seconds, 1),  # all processes together
    }


def step_row(step: int, epoch: float, lr: float, now: tuple[Any, ...], before: tuple[Any, ...]) -> dict[str, Any]:
    """metrics_steps.jsonl's row: the mean loss, accuracy and speed of the steps since ``before``."""
    images = now[2] - before[2]
    return {"step": step, "epoch": round(epoch, 4), "loss": (now[0] - before[0]) / images,
            "acc": (now[1] - before[1]) / images, "lr": lr, "images_per_s": round(images / (now[3] - before[3]), 1)}  # fmt: skip


def measure(setup: Setup, loop: Training, state: State, row: dict[str, Any], epoch: int) -> bool:
    """Fill the row's eval-mode figures (training sample, validation, optionally test); True if validation improved."""
    cfg, device, world = setup.config, setup.device, setup.world
    t1 = time.perf_counter()
    # Every rank evaluates rank 0's batch-norm statistics: the ones last.pt and best.pt hold.
    world.broadcast_state(setup.model, buffers_only=True)
    model = loop.eval_model
    row["train_loss"], row["train_acc"], _ = evaluate(model, loop.train_sample, loop.amp, device, world=world)
    improved = False
    last = epoch + 1 == cfg.train.epochs
    if loop.val is not None and ((epoch + 1) % cfg.train.eval_every == 0 or last):
        row["val_loss"], row["val_acc"], _ = evaluate(model, loop.val, loop.amp, device, world=world)
        loop.schedule.after_validation(row["val_loss"])
        improved = _improved(cfg.train.monitor, row, state.best)
        if improved:
            state.best = {"epoch": epoch + 1, "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
    if cfg.train.test_every_epoch:
        row["test_loss"], row["test_acc"], _ = evaluate(model, loop.test, loop.amp, device, world=world)
    row["eval_seconds"] = round(time.perf_counter() - t1, 3)
    return improved


def stop_early(patience: int | None, state: State, reporter: Reporter) -> bool:
    if patience is None or state.evals_without_improvement < patience:
        return False
    reporter.note(f"early stopping: no improvement in {patience} evaluations")
    return True


def final_test(
    setup: Setup, loop: Training, run: Run, checkpoints: Checkpointer, state: State, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    """Test with the best-by-validation weights (the last ones without validation); draw the pictures (``steps``:
    the rows of metrics_steps.jsonl, drawn over the per-epoch curves)."""
    checkpoints.load_best(setup.device)  # on every rank
    test_loss, test_acc, preds = evaluate(loop.eval_model, loop.test, loop.amp, setup.device, want_preds=True,
                                          world=setup.world)  # fmt: skip
    if setup.config.output.plots and setup.world.main:
        write_report(setup, run, preds, setup.config.output.gallery_size, state.history, steps)
    return {"test_loss": test_loss, "test_acc": test_acc, "message": ""}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Batches,
    amp: torch.dtype | None,
    device: torch.device,
    want_preds: bool = False,
    world: World = SINGLE,
) -> tuple[float, float, torch.Tensor | None]:
    """Mean loss, accuracy and (optionally) every prediction over a split, in eval mode.

    With several processes each rank evaluates its shard (``split[rank::world]``, no padding) and the sums
    (loss, correct, count) are all-reduced: every image counts exactly once, as in one process.
    """
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    preds = []
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        p = logits.argmax(1)
        correct += (p == y).sum()
        count += y.shape[0]
        if want_preds:
            preds.append(p)
    total_loss, total_correct, n = world.sum(loss_sum, correct, count, device=device)
    if not want_preds:
        return total_loss / n, total_correct / n, None
    mine = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=device)
    return total_loss / n, total_correct / n, world.gather_strided(mine, int(n)).cpu()


def compile_now(setup: Setup, loop: Training) -> float:
    """Compile before the first epoch (one training and one evaluation batch); the seconds it took.

    torch.compile compiles lazily, on the first call; done here, its cost is reported on its own instead of
    hiding in the first epoch's images/s. Nothing changes: gradients are dropped, batch-norm statistics restored.
    """
    model, device = setup.model, setup.device
    saved = [b.detach().clone() for b in model.buffers()]
    synchronize(device)
    t0 = time.perf_counter()
    setup.transfer.train_mode(model)
    x, y = next(iter(loop.train))
    with torch.autocast(device.type, dtype=loop.amp, enabled=loop.amp is not None):
        loss = F.cross_entropy(main_logits(loop.step_model(x)).float(), y)
    loss.backward()
    loop.optimizer.zero_grad(set_to_none=True)
    evaluate(loop.eval_model, _first(loop.val or loop.test), loop.amp, device)
    synchronize(device)
    with torch.no_grad():
        for buffer, value in zip(model.buffers(), saved, strict=True):
            buffer.copy_(value)
    return round(time.perf_counter() - t0, 3)


def _first(batches: Batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(iter(batches))]


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """All randomness of an epoch derives from (seed, epoch): augmentation and dropout also from the rank, so that
    processes do not draw the same noise. That is what makes a resumed run replay an interrupted epoch exactly."""
    s = (seed * 1_000_003 + epoch) % (2**63)
    if rank:
        s = (s * 31 + rank * 1_000_000_007) % (2**63)
    torch.manual_seed(s)
    random.seed(s)


def order_seed(seed: int, epoch: int) -> int:
    """Seeds the epoch's permutation: the same on every rank, apart from the global RNG's stream."""
    return (seed * 1_000_003 + epoch + 0x5DEECE66D) % (2**63)


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


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times measure it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _improved(monitor: str, row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    if monitor == "val_loss":
        return row["val_loss"] < best["val_loss"]
    # Accuracy ties are broken by the lower loss.
    return (row["val_acc"], -row["val_loss"]) > (best["val_acc"], -best["val_loss"])


def write_report(
    setup: Setup, run: Run, preds: torch.Tensor, gallery_size: int, history: list[dict], steps: list[dict] | None = None
) -> None:
    from dlx import report  # matplotlib is imported only when pictures are drawn

    images, labels = setup.test.images.cpu(), setup.test.labels.cpu()
    report.save_misclassified(images, labels, preds, setup.data.classes, run.path / "misclassified.png", gallery_size)
    report.save_confusion(labels, preds, setup.data.classes, run.path / "confusion.png")
    report.save_curves(history, run.path / "curves.png", steps=steps)
