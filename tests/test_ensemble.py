"""dlx ensemble: members on the same test images combine; identical members equal one; compare lists it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlx.cli import app
from dlx.compare import compare
from dlx.config import config_from_dict
from dlx.ensemble import ensemble
from dlx.errors import DlxError
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
DATA = {"dataset": "mnist", "val_size": 200, "train_size": 1500, "test_size": 500, "batch_size": 50}


def train(runs: Path, name: str, **overrides: object) -> dict:
    settings = {"data": dict(DATA), "train.epochs": 2, "output.plots": False, **overrides}
    cfg = tiny(runs, name=name, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1}, **settings)
    return start_run(config_from_dict(cfg), quiet=True)


def test_an_ensemble_of_three_different_runs_is_not_worse_than_its_best_member(runs_dir: Path) -> None:
    members = [train(runs_dir / "m", f"m{i}", seed=i) for i in range(3)]
    s = ensemble([runs_dir / "m"], name="ens", runs_dir=runs_dir)
    accs = sorted(m["test_acc"] for m in members)
    assert sorted(m["test_acc"] for m in s["members"]) == accs  # each member measured as it recorded itself
    assert s["test_acc"] >= accs[-1] - 0.002 and s["best_member_test_acc"] == accs[-1]
    assert s["kind"] == "ensemble" and s["test_images"] == 500
    folder = Path(s["run_dir"])
    assert (folder / "misclassified.png").is_file() and (folder / "confusion.png").is_file()
    assert len(compare([runs_dir]).runs) == 4  # compare lists the ensemble beside its members

    vote = ensemble([runs_dir / "m"], method="vote", top=2, by="val_acc", name="vote", runs_dir=runs_dir)
    best_two = sorted(members, key=lambda m: m["best_val_acc"], reverse=True)[:2]
    assert sorted(m["run"] for m in vote["members"]) == sorted(m["run_dir"] for m in best_two)


def test_an_ensemble_of_identical_members_equals_the_member(runs_dir: Path, tmp_path: Path) -> None:
    import shutil

    one = train(runs_dir / "same", "same")
    shutil.copytree(one["run_dir"], tmp_path / "copy")
    s = ensemble([Path(one["run_dir"]), tmp_path / "copy"], name="twins", runs_dir=runs_dir)
    assert s["test_acc"] == one["test_acc"]


def test_members_must_share_their_test_images_and_choose_by_validation(runs_dir: Path) -> None:
    train(runs_dir / "a", "a")
    train(runs_dir / "a", "b", data={**DATA, "test_size": 400})
    with pytest.raises(DlxError, match="test split is not the same images"):
        ensemble([runs_dir / "a"], runs_dir=runs_dir)
    result = CliRunner().invoke(app, ["ensemble", str(runs_dir / "a"), "--top", "2", "--by", "test_acc"])
    assert result.output.strip() == ("error: --by 'test_acc': choose val_acc or val_loss (members are chosen by "
                                     "validation, never by test)")  # fmt: skip
    with pytest.raises(DlxError, match="an ensemble needs 2 or more completed runs; found 0"):
        ensemble([runs_dir / "nothing"], runs_dir=runs_dir)
    assert json.loads((next((runs_dir / "a").rglob("summary.json"))).read_text())["status"] == "completed"


def test_compare_samples_shows_what_one_run_gets_right_and_the_other_wrong(runs_dir: Path) -> None:
    a = train(runs_dir / "pair", "a", seed=1)
    b = train(runs_dir / "pair", "b", seed=2, **{"train.epochs": 1})
    result = CliRunner().invoke(app, ["compare", a["run_dir"], b["run_dir"], "--samples"])
    assert result.exit_code == 0, result.output
    from dlx.compare.samples import compare_samples, label

    name_a, name_b = label(Path(a["run_dir"])), label(Path(b["run_dir"]))
    assert name_a.startswith("a-") and name_b.startswith("b-")
    folder = Path(a["run_dir"]) / "samples" / name_b
    assert sorted(p.name for p in folder.iterdir()) == [f"right_{name_a}_wrong_{name_b}.png",
                                                         f"right_{name_b}_wrong_{name_a}.png"]  # fmt: skip

    r = compare_samples(Path(a["run_dir"]), Path(b["run_dir"]), folder)
    # The counts agree with the two runs' recorded accuracies: right(A) - right(B) = only A - only B.
    assert r["a_acc"] == a["test_acc"] and r["b_acc"] == b["test_acc"]
    assert r["a_right_b_wrong"] - r["b_right_a_wrong"] == round((a["test_acc"] - b["test_acc"]) * r["images"])
    result = CliRunner().invoke(app, ["compare", a["run_dir"], "--samples"])
    assert result.output.strip() == "error: --samples compares two runs; got 1 path(s)"
