"""``dlx models`` without full builds: figures counted on the meta device equal a full CPU build's, exactly;
repeated listings come from the figures cache, without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from torch import nn

import dlx.inspect
import dlx.models
from dlx.errors import DlxError
from dlx.inspect import model_rows, required_args
from dlx.modelcache import FILE_NAME, FiguresCache
from dlx.modelinfo import count_parameters, flops_per_image
from dlx.models import MODELS, build_model
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [((1, 28, 28), 10), ((3, 32, 32), 100)]


def no_full_build(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("dlx models built a model at full size")


@pytest.fixture
def meta_only(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """The full-size fallback raises, and every model built must hold no real tensor (all on meta)."""
    built: list[nn.Module] = []

    def on_meta(*args: Any, **kwargs: Any) -> nn.Module:
        model = build_model(*args, **kwargs)
        tensors = [*model.parameters(), *model.buffers()]
        assert tensors and all(t.is_meta for t in tensors), "a model counted by dlx models has real tensors"
        built.append(model)
        return model

    monkeypatch.setattr(dlx.inspect, "full_figures", no_full_build)
    monkeypatch.setattr(dlx.models, "build_model", on_meta)
    return built


@pytest.mark.parametrize(("shape", "classes"), SHAPES, ids=["1x28x28-10", "3x32x32-100"])
@pytest.mark.parametrize("name", MODELS.names())
def test_figures_equal_a_full_build(
    name: str, shape: tuple[int, int, int], classes: int, tmp_path: Path, meta_only: list[nn.Module]
) -> None:
    [row] = model_rows(shape, classes, name, cache_folder=tmp_path)
    if required_args(MODELS.get(name)):  # sequential: its layers come from the experiment file, no figures
        assert (row.parameters, row.flops, row.note) == (None, None, "needs model.layers")
        return
    model = build_model(name, in_channels=shape[0], num_classes=classes, image_size=shape[1])
    assert (row.parameters, row.flops) == (count_parameters(model), flops_per_image(model, shape))
    assert len(meta_only) == 1


def test_all_models_are_listed_without_a_full_build(tmp_path: Path, meta_only: list[nn.Module]) -> None:
    rows = model_rows((1, 28, 28), 10, cache_folder=tmp_path)
    assert [r.name for r in rows] == MODELS.names()
    counted = [r.name for r in rows if r.parameters is not None and r.flops is not None]
    assert counted == [n for n in MODELS.names() if not required_args(MODELS.get(n))]
    assert len(meta_only) == len(counted)


def test_a_repeated_listing_comes_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = model_rows((3, 32, 32), 100, "[lm]*", cache_folder=tmp_path)
    assert [r.name for r in first] == ["lenet5", "mlp"]
    monkeypatch.setattr(dlx.inspect, "meta_figures", no_full_build)
    monkeypatch.setattr(dlx.inspect, "full_figures", no_full_build)
    assert model_rows((3, 32, 32), 100, "[lm]*", cache_folder=tmp_path) == first
    assert model_rows((3, 32, 32), 100, "mlp", cache_folder=tmp_path) == first[1:]
    with pytest.raises(DlxError, match="no registered model matches 'nope'; models: alexnet, deep_cnn"):
        model_rows((3, 32, 32), 100, "nope", cache_folder=tmp_path)
    with pytest.raises(AssertionError):  # another input size is not in the cache
        model_rows((3, 28, 28), 100, "mlp", cache_folder=tmp_path)


def test_a_cached_listing_imports_no_torch(tmp_path: Path) -> None:
    model_rows((1, 28, 28), 10, "mlp", cache_folder=tmp_path)
    code = (
        "import sys\n"
        "from dlx.cli import app\n"
        "app(['models', 'mlp'], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "DLX_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "109,810" in out.stdout


def test_a_stale_or_broken_cache_is_counted_again(tmp_path: Path) -> None:
    right = model_rows((1, 28, 28), 10, "mlp", cache_folder=tmp_path)
    path = tmp_path / FILE_NAME
    data = json.loads(path.read_text())
    data["tables"]["1x28x28/10"]["mlp"]["parameters"] = 1
    stale = {**data, "fingerprint": {**data["fingerprint"], "torch": "0.0.1"}}
    path.write_text(json.dumps(stale))
    assert model_rows((1, 28, 28), 10, "mlp", cache_folder=tmp_path) == right
    data["tables"]["1x28x28/10"]["mlp"] = {"name": "mlp", "parameters": "many"}
    path.write_text(json.dumps(data))
    assert model_rows((1, 28, 28), 10, "mlp", cache_folder=tmp_path) == right
    path.write_text("{not json")
    assert model_rows((1, 28, 28), 10, "mlp", cache_folder=tmp_path) == right
    assert FiguresCache.load(tmp_path).table((1, 28, 28), 10)["mlp"]["parameters"] == right[0].parameters


def test_what_meta_cannot_do_the_full_build_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def meta_fails(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("reads tensor values")

    monkeypatch.setattr(dlx.inspect, "meta_figures", meta_fails)
    [row] = model_rows((1, 28, 28), 10, "lenet5", cache_folder=tmp_path)
    assert (row.parameters, row.flops) == (61_706, 833_040)
    # Too small for deep_cnn: the build's reason is the row's note, as before.
    with pytest.raises(DlxError) as err:
        build_model("deep_cnn", in_channels=1, num_classes=10, image_size=2)
    [row] = model_rows((1, 2, 2), 10, "deep_cnn", cache_folder=tmp_path)
    assert (row.parameters, row.flops, row.note) == (None, None, str(err.value).rsplit(": ", 1)[-1])


def tiny_net(
    *, in_channels: int, num_classes: int, image_size: int, width: float = 1.0, depth: float = 1.0
) -> nn.Module:
    """A net registered at run time, outside dlx."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))


def test_a_model_registered_at_run_time_is_listed_but_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(MODELS._entries, "zz_tiny", tiny_net)
    rows = model_rows((1, 28, 28), 10, "[mz]*", cache_folder=tmp_path)
    assert [(r.name, r.parameters, r.flops) for r in rows][1:] == [("zz_tiny", 784 * 10 + 10, 2 * 784 * 10)]
    cache = FiguresCache.load(tmp_path)
    assert cache.names is not None and "zz_tiny" not in cache.names and "mlp" in cache.names
    assert set(cache.table((1, 28, 28), 10)) == {"mlp"}


def test_an_input_too_small_for_a_model_is_a_row_note_not_a_traceback(tmp_path: Path) -> None:
    (row,) = model_rows((3, 4, 4), 10, "densenet121", cache_folder=tmp_path)
    assert (row.parameters, row.flops) == (None, None)
    assert row.note.startswith("does not run on 3x4x4: Given input size: (512x1x1)")
