"""End-to-end training on a real MNIST subset (2,000 training images, CPU)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch

from dlx import checkpoint as ckpt
from dlx.config import config_from_dict
from dlx.errors import DlxError
from dlx.progress import Reporter
from dlx.runs import Run, create_run
from dlx.session import resume_run, start_run
from tests.conftest import tiny

TIMING_KEYS = {"seconds", "images_per_s", "eval_seconds"}


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def only_run(runs_dir: Path, name: str = "tiny") -> Path:
    (path,) = sorted((runs_dir / name).iterdir())
    return path


def test_short_training_beats_chance_and_writes_a_complete_run(runs_dir: Path) -> None:
    summary = start_run(config_from_dict(tiny(runs_dir)), quiet=True)
    run = Path(summary["run_dir"])
    assert summary["status"] == "completed"
    # 10 classes: chance is 10%. Two epochs on 2,000 images reach ~88%.
    assert summary["test_acc"] > 0.75, summary
    assert summary["best_val_acc"] > 0.75
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "checkpoints/last.pt",
                 "checkpoints/best.pt", "misclassified.png", "confusion.png", "curves.png"):  # fmt: skip
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("parameters", "flops_per_image", "versions", "device", "argv", "git", "wall_seconds"):
        assert key in on_disk, key
    assert on_disk["parameters"] == sum(
        p.numel()
        for p in ckpt.load_checkpoint(run / "checkpoints/best.pt")["model"].values()
        if p.dtype.is_floating_point
    )
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc")


def test_same_seed_same_metrics(runs_dir: Path) -> None:
    cfg = config_from_dict(tiny(runs_dir, **{"train.epochs": 1}))
    a = start_run(cfg, run_id="a", quiet=True)
    b = start_run(cfg, run_id="b", quiet=True)
    assert metrics(Path(a["run_dir"])) == metrics(Path(b["run_dir"]))
    assert a["test_loss"] == b["test_loss"]


def test_checkpoints_load_with_weights_only(runs_dir: Path) -> None:
    summary = start_run(config_from_dict(tiny(runs_dir, **{"train.epochs": 1})), quiet=True)
    run = Run(summary["run_dir"])
    last = torch.load(run.last_checkpoint, weights_only=True)
    assert set(last) >= {"model", "optimizer", "schedule", "scaler", "rng", "state", "config"}
    assert last["state"]["epoch"] == 1
    best = torch.load(run.best_checkpoint, weights_only=True)
    assert best["epoch"] == 1


def step_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics_steps.jsonl").read_text().splitlines()]


class InterruptAt(Reporter):
    """Raise KeyboardInterrupt (as Ctrl-C would) at a given step of a given epoch."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(quiet=True)
        self.at = (epoch, step)
        self.current = -1

    def epoch_start(self, epoch: int, steps: int) -> None:
        self.current = epoch

    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None:
        if (self.current, done) == self.at:
            raise KeyboardInterrupt


def test_a_signal_just_after_last_pt_is_renamed_still_counts_its_epoch(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between last.pt's rename and the bookkeeping after it: summary.json must name the epoch last.pt
    holds (CI once saw epochs_completed 0 beside a last.pt of epoch 1)."""
    import signal

    import dlx.runs

    fsync_dir = dlx.runs._fsync_dir

    def signal_after_rename(folder: Path) -> None:
        fsync_dir(folder)
        if (folder / "last.pt").exists():
            os.kill(os.getpid(), signal.SIGINT)  # a real signal, at the worst moment

    monkeypatch.setattr(dlx.runs, "_fsync_dir", signal_after_rename)
    with pytest.raises(KeyboardInterrupt):
        start_run(config_from_dict(tiny(runs_dir, **{"train.epochs": 3})), run_id="cut", quiet=True)
    cut = runs_dir / "tiny" / "cut"
    held = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["state"]["epoch"]
    summary = json.loads((cut / "summary.json").read_text())
    assert (summary["status"], summary["epochs_completed"], held) == ("interrupted", 1, 1)


def test_resume_after_interrupt_equals_uninterrupted(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"train.epochs": 3, "schedule": {"name": "cosine", "warmup_epochs": 0.5},
                 "augment": {"rotate": 10, "translate": 0.1}}  # fmt: skip
    cfg = config_from_dict(tiny(runs_dir, **overrides))
    full = start_run(cfg, run_id="full", quiet=True)

    import dlx.train

    monkeypatch.setattr(dlx.train, "Reporter", lambda quiet, silent: InterruptAt(epoch=1, step=10))
    with pytest.raises(KeyboardInterrupt):
        start_run(cfg, run_id="cut", quiet=True)
    cut = runs_dir / "tiny" / "cut"
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["epochs_completed"] == 1
    assert f"dlx train --resume {cut}" in summary["message"]
    monkeypatch.undo()

    resumed = resume_run(cut, quiet=True)
    assert resumed["status"] == "completed"
    assert metrics(cut) == metrics(Path(full["run_dir"]))
    assert (resumed["test_loss"], resumed["test_acc"]) == (full["test_loss"], full["test_acc"])
    a = torch.load(cut / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(Path(full["run_dir"]) / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["resumed"][0]["from_epoch"] == 1
    # The step rows continue where the checkpoint stood: the interrupted epoch's rows are not doubled.
    speedless = [{k: v for k, v in r.items() if k != "images_per_s"} for r in step_metrics(cut)]
    assert speedless == [
        {k: v for k, v in r.items() if k != "images_per_s"} for r in step_metrics(Path(full["run_dir"]))
    ]
    assert [r["step"] for r in speedless] == sorted({r["step"] for r in speedless})


def test_resume_errors(runs_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DlxError, match="no such directory"):
        resume_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlxError, match=r"not a dlx run directory \(no config.yaml\)"):
        resume_run(tmp_path / "empty")
    done = start_run(config_from_dict(tiny(runs_dir, **{"train.epochs": 1})), quiet=True)
    with pytest.raises(DlxError, match="already completed"):
        resume_run(done["run_dir"])


def test_divergence_stops_the_run(runs_dir: Path) -> None:
    cfg = config_from_dict(tiny(runs_dir, optimizer={"name": "sgd", "lr": 1e6}, **{"train.epochs": 1}))
    with pytest.raises(DlxError, match=r"loss became (nan|inf)"):
        start_run(cfg, run_id="boom", quiet=True)
    summary = json.loads((runs_dir / "tiny" / "boom" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "optimizer.lr" in summary["message"]


def test_existing_run_id_is_never_clobbered(runs_dir: Path) -> None:
    create_run(runs_dir, "tiny", "x")
    (runs_dir / "tiny" / "x" / "keep.txt").write_text("data")
    with pytest.raises(DlxError, match="already exists; choose another --run-id, or continue it with"):
        start_run(config_from_dict(tiny(runs_dir)), run_id="x", quiet=True)
    assert (runs_dir / "tiny" / "x" / "keep.txt").read_text() == "data"


@pytest.mark.parametrize(
    ("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["umask022", "umask002", "umask077"]
)
def test_run_files_follow_the_umask(runs_dir: Path, umask: int, mode: int) -> None:
    """Atomic writes go through mkstemp (0600): the file must get the mode any other new file would."""
    before = os.umask(umask)
    try:
        run = create_run(runs_dir, "tiny", "modes")
        run.write_summary({"status": "running"})
        run.write_config("name: tiny\n")
    finally:
        os.umask(before)
    assert stat.S_IMODE(run.summary_path.stat().st_mode) == mode
    assert stat.S_IMODE(run.config_path.stat().st_mode) == mode


def test_bad_device_leaves_no_run_directory(runs_dir: Path) -> None:
    cfg = config_from_dict(tiny(runs_dir, **{"train.device": "cuda:3"}))
    with pytest.raises(DlxError, match=r"train.device: 'cuda:3' requested but"):
        start_run(cfg, quiet=True)
    assert not runs_dir.exists()


def test_gallery_holds_only_misclassified_with_right_labels(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlx.report

    seen = {}
    real = dlx.report.save_misclassified

    def spy(images, labels, preds, classes, path, max_images=20):
        seen.update(images=images, labels=labels, preds=preds)
        return real(images, labels, preds, classes, path, max_images)

    monkeypatch.setattr(dlx.report, "save_misclassified", spy)
    summary = start_run(config_from_dict(tiny(runs_dir, **{"train.epochs": 1})), quiet=True)
    # The labels handed to the gallery are the true test labels, the predictions give the test accuracy.
    from dlx.data.datasets import load_dataset

    mnist = load_dataset("mnist")
    assert torch.equal(seen["labels"], mnist.test_labels[:1000])
    assert torch.equal(seen["images"], mnist.test_images[:1000])
    assert (seen["preds"] == seen["labels"]).float().mean().item() == pytest.approx(summary["test_acc"])


def test_auxiliary_heads_are_trained(runs_dir: Path) -> None:
    """GoogLeNet's auxiliary classifiers return AuxOutput in training; their loss reaches their weights."""
    from dlx.build import prepare
    from dlx.train import fit

    model = {"name": "googlenet", "width": 0.125, "depth": 0.5, "args": {"aux_logits": True}}
    data = {"dataset": "mnist", "val_size": 100, "train_size": 200, "test_size": 100, "batch_size": 50}
    cfg = config_from_dict(tiny(runs_dir, model=model, data=data, **{"train.epochs": 1}))
    setup = prepare(cfg)
    aux = {k: v.clone() for k, v in setup.model.state_dict().items() if k.startswith("aux")}
    assert aux, "googlenet with aux_logits has aux* parameters"
    summary = fit(setup, create_run(runs_dir, "tiny", "aux"), quiet=True)
    assert summary["status"] == "completed"
    after = setup.model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in aux.items())


def test_lr_column_is_the_mean_rate_the_epoch_trained_with(runs_dir: Path) -> None:
    cfg = config_from_dict(tiny(runs_dir, schedule={"name": "cosine"}))  # 2 epochs of 80 steps, no warmup
    summary = start_run(cfg, quiet=True)
    steps, total = 80, 160
    factors = [0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    expected = [0.003 * sum(factors[:steps]) / steps, 0.003 * sum(factors[steps:]) / steps]
    assert [r["lr"] for r in metrics(Path(summary["run_dir"]))] == pytest.approx(expected, rel=1e-9)


def test_train_accuracy_is_measured_in_eval_mode_on_a_fixed_sample(runs_dir: Path) -> None:
    """train_loss/train_acc are the model's eval-mode figures on training images (the book's definition);
    running_loss/running_acc are the train-mode figures seen while the weights moved."""
    from dlx.build import build_training, prepare
    from dlx.train import evaluate

    cfg = config_from_dict(tiny(runs_dir, **{"train.epochs": 1, "regularization": {"dropout": 0.5}}))
    summary = start_run(cfg, quiet=True)
    (row,) = metrics(Path(summary["run_dir"]))
    setup = prepare(cfg)
    setup.model.load_state_dict(ckpt.load_checkpoint(Path(summary["run_dir"]) / "checkpoints/last.pt")["model"])
    loop = build_training(setup)
    assert len(loop.train_sample.split) == 2000  # train.train_sample (5000) caps at the split's size
    loss, acc, _ = evaluate(setup.model, loop.train_sample, None, setup.device)
    assert (row["train_loss"], row["train_acc"]) == (loss, acc)
    assert row["running_acc"] != row["train_acc"]
    assert summary["final_train_acc"] == acc


def test_summary_records_the_git_commit_of_the_experiments_project(tmp_path: Path, runs_dir: Path) -> None:
    import subprocess

    import yaml

    from dlx.config import load_config

    project = tmp_path / "project"
    project.mkdir()
    (project / "exp.yaml").write_text(yaml.safe_dump(tiny(runs_dir, **{"train.epochs": 1, "output.plots": False})))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "exp.yaml"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=project, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    summary = start_run(load_config(project / "exp.yaml"), quiet=True)
    assert summary["git"] == {"commit": head, "dirty": False}
    assert summary["experiment_file"] == str(project / "exp.yaml")
    assert summary["versions"]["dlx"]


def test_last_training_batch_of_one_is_dropped(runs_dir: Path) -> None:
    """mlp + BatchNorm1d, 201 images in batches of 25: the final batch of 1 image is dropped, not a crash."""
    data = {"dataset": "mnist", "val_size": 100, "train_size": 201, "test_size": 100, "batch_size": 25}
    model = {"name": "mlp", "width": 0.25}
    cfg = tiny(runs_dir, data=data, model=model, regularization={"batch_norm": True}, **{"train.epochs": 1})
    summary = start_run(config_from_dict(cfg), quiet=True)
    assert summary["status"] == "completed"
    last = torch.load(Run(summary["run_dir"]).last_checkpoint, weights_only=True)
    assert last["state"]["step"] == 8  # 201 // 25 full batches: the schedule's steps_per_epoch


def test_drop_last_only_for_training_batches() -> None:
    from dlx.data.loader import Batches, Split

    def split(n: int) -> Split:
        return Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n))

    def sizes(batches: Batches) -> list[int]:
        return [int(y.shape[0]) for _, y in batches]

    train = Batches(split(51), batch_size=25, mean=None, std=None, shuffle=True, drop_last=True)
    assert (len(train), sizes(train)) == (2, [25, 25])
    evaluation = Batches(split(51), batch_size=25, mean=None, std=None)
    assert (len(evaluation), sizes(evaluation)) == (3, [25, 25, 1])
    # A training split smaller than one batch keeps its one short batch: an epoch never has zero steps.
    small = Batches(split(7), batch_size=25, mean=None, std=None, shuffle=True, drop_last=True)
    assert (len(small), sizes(small)) == (1, [7])


@pytest.mark.parametrize(
    ("epochs", "factors"),
    [(1, [1.0]), (2, [1.0, 0.1]), (3, [1.0, 0.1, 0.01]), (4, [1.0, 1.0, 0.1, 0.01])],
)
def test_multistep_default_milestones_lie_inside_the_run(epochs: int, factors: list[float]) -> None:
    """Default milestones at 50% and 75% of the run, kept in 1..epochs-1: short runs start at the base rate."""
    from dlx.schedule import build_schedule

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    schedule = build_schedule("multistep", optimizer, epochs=epochs, steps_per_epoch=2)
    rates = []
    for _ in range(epochs * 2):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_step()
    assert rates[::2] == pytest.approx([0.5 * f for f in factors])  # one rate per epoch; epoch 1 at the base rate
    assert rates[1::2] == rates[::2]
