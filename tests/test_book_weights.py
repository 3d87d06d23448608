"""dlx import-weights book: the book's pickle of NumPy arrays becomes a deep_cnn run whose predictions are the
book's own (its non-inverted dropout folded in); a pickle with anything but arrays is refused, never run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dlx.assess import evaluate_run, predict_logits
from dlx.book_weights import SHAPES
from dlx.build import make_batches, prepare
from dlx.checkpoint import load_checkpoint
from dlx.cli import app
from dlx.config import load_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def book_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {}
    for i, (key, shape) in enumerate(SHAPES.items(), 1):
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        params[key] = rng.normal(0, np.sqrt(2 / fan_in), size=shape).astype(np.float32)
        params[f"b{i}"] = rng.normal(0, 0.1, size=shape[0] if len(shape) == 4 else shape[1]).astype(np.float32)
    return params


def book_predict(p: dict[str, np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """The book's DeepConvNet.predict(x, train_flg=False), written from its layer list (not from dlx)."""
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    h = x
    for i, pad in zip(range(1, 7), (1, 1, 1, 2, 1, 1), strict=True):
        h = F.relu(F.conv2d(h, t(p[f"W{i}"]), t(p[f"b{i}"]), padding=pad))
        if i % 2 == 0:
            h = F.max_pool2d(h, 2)
    h = F.relu(h.reshape(h.shape[0], -1) @ t(p["W7"]) + t(p["b7"]))
    h = h * 0.5  # Dropout(train_flg=False): x * (1 - 0.5)
    h = h @ t(p["W8"]) + t(p["b8"])
    return h * 0.5


def test_the_books_weights_give_the_books_predictions(tmp_path: Path) -> None:
    params = book_params()
    (tmp_path / "deep_convnet_params.pkl").write_bytes(pickle.dumps(params))
    result = CliRunner().invoke(app, ["import-weights", "book", str(tmp_path / "deep_convnet_params.pkl"),
                                      "--output", str(tmp_path / "book")])  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tmp_path / "book"
    setup = prepare(load_run_config(run / "config.yaml"))
    setup.model.load_state_dict(load_checkpoint(run / "checkpoints" / "best.pt")["model"])
    mine = predict_logits(setup.model, make_batches(setup, setup.test), None, setup.device)
    x = setup.test.images.float() / 255  # the book's normalize=True: pixels scaled to [0, 1]
    theirs = torch.cat([book_predict(params, x[i : i + 1000]) for i in range(0, len(x), 1000)])
    assert torch.allclose(mine, theirs, atol=1e-4)  # the scores themselves, not only the argmax
    assert torch.equal(mine.argmax(1), theirs.argmax(1))
    right = int((theirs.argmax(1) == setup.test.labels).sum())
    assert evaluate_run(run, pictures=False)["acc"] == right / len(setup.test.labels)


class Boom:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_a_pickle_with_anything_but_arrays_is_refused_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"W1": Boom()}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["import-weights", "book", "evil.pkl", "--output", "out"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: evil.pkl: not the book's weights (refused posix.system: only NumPy "
                                     "arrays may be in the book's weights)")  # fmt: skip
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()
    wrong = {**book_params(), "W7": np.zeros((1000, 50), dtype=np.float32)}
    (tmp_path / "wrong.pkl").write_bytes(pickle.dumps(wrong))
    result = CliRunner().invoke(app, ["import-weights", "book", "wrong.pkl"])
    assert result.output.strip() == ("error: wrong.pkl: W7 has shape (1000, 50), the book's DeepConvNet has "
                                     "(1024, 50)")  # fmt: skip
