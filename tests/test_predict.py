"""dlx predict: image files get the classes the run gives the same images in its test split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlx.assess import predict_logits
from dlx.build import make_batches, prepare
from dlx.checkpoint import load_checkpoint
from dlx.cli import app
from dlx.config import config_from_dict, load_run_config
from dlx.predict import predict
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_predicting_test_images_from_files_gives_the_runs_own_predictions(runs_dir: Path, tmp_path: Path) -> None:
    cfg = tiny(runs_dir, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1},
               data={"dataset": "mnist", "val_size": 100, "train_size": 1000, "test_size": 30, "batch_size": 50},
               **{"train.epochs": 1, "output.plots": False})  # fmt: skip
    run = Path(start_run(config_from_dict(cfg), quiet=True)["run_dir"])
    setup = prepare(load_run_config(run / "config.yaml"))
    setup.model.load_state_dict(load_checkpoint(run / "checkpoints" / "best.pt")["model"])
    expected = predict_logits(setup.model, make_batches(setup, setup.test), None, setup.device).argmax(1)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(setup.test.images[i, 0].cpu().numpy()).save(folder / f"{i:02d}.png")
    results = predict(run, [folder], top=3)
    assert [Path(r["file"]).name for r in results] == [f"{i:02d}.png" for i in range(30)]
    assert [int(r["top"][0]["class"]) for r in results] == expected.tolist()
    assert all(len(r["top"]) == 3 and r["top"][0]["probability"] >= r["top"][1]["probability"] for r in results)

    # A larger RGB image is converted and resized (shorter side, center crop): still a prediction.
    big = Image.fromarray(setup.test.images[0, 0].cpu().numpy()).convert("RGB").resize((56, 70))
    big.save(tmp_path / "big.jpg")
    (r,) = predict(run, [tmp_path / "big.jpg"], top=1)
    assert 0.0 < r["top"][0]["probability"] <= 1.0

    (tmp_path / "broken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "broken.png")])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {tmp_path / 'broken.png'}: not a readable image (")
    result = CliRunner().invoke(app, ["predict", str(run), str(folder / "00.png"), "--format", "csv", "--top", "2"])
    assert result.exit_code == 0 and result.output.splitlines()[0] == "file,rank,class,probability"
    assert len(result.output.splitlines()) == 3
    assert torch.equal(expected[:1], torch.tensor([int(result.output.splitlines()[1].split(",")[2])]))
