"""``dlx import-weights book``: the book's trained DeepConvNet (``deep_convnet_params.pkl``) as a dlx run.

The book pickles a dict of NumPy arrays: W1..W6 (conv filters, [out, in, 3, 3]) with b1..b6, then W7 [1024, 50]
and W8 [50, 10] (affine, input-major) with b7, b8. They are read with a restricted unpickler that admits only
NumPy arrays, dtypes and plain containers: anything else is refused and nothing is executed.

The book's Dropout is not inverted: at test time it multiplies by 0.5 after the hidden layer and after the
scores. The first factor scales W8 but not b8 and the second scales both, so the book's scores are
``0.25 * W8 h + 0.5 * b8``; dlx folds exactly that into the last layer (PyTorch's dropout is the identity in
eval mode). A pure output scale would not do: it leaves the bias too large and changes some predictions.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from dlx.errors import DlxError, first_line

SHAPES = {  # the book's DeepConvNet at width 1 on 1x28x28 MNIST
    "W1": (16, 1, 3, 3), "W2": (16, 16, 3, 3), "W3": (32, 16, 3, 3), "W4": (32, 32, 3, 3),
    "W5": (64, 32, 3, 3), "W6": (64, 64, 3, 3), "W7": (1024, 50), "W8": (50, 10),
}  # fmt: skip
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only NumPy arrays may be in the book's weights")
        return super().find_class(module, name)


def read_book_params(path: Path) -> dict[str, Any]:
    """The book's parameter dict, read without running anything but NumPy's array reconstruction."""
    try:
        params = _NumpyOnly(io.BytesIO(path.read_bytes())).load()
    except OSError as e:
        raise DlxError(f"{path}: cannot read ({e.strerror})") from None
    except Exception as e:
        raise DlxError(f"{path}: not the book's weights ({first_line(e)})") from None
    if not isinstance(params, dict):
        raise DlxError(f"{path}: holds a {type(params).__name__}, not the book's dict of W1..W8, b1..b8")
    missing = [k for k in [*SHAPES, *(f"b{i}" for i in range(1, 9))] if k not in params]
    if missing:
        raise DlxError(f"{path}: lacks {', '.join(missing)}")
    for key, shape in SHAPES.items():
        if tuple(params[key].shape) != shape:
            raise DlxError(f"{path}: {key} has shape {tuple(params[key].shape)}, the book's DeepConvNet has {shape}")
    return params


def book_state_dict(params: dict[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The book's arrays in the deep_cnn's own order and layout (affine weights transposed, dropout folded)."""
    state = model.state_dict()
    convs = [k for k in state if k.startswith("features.") and k.endswith(".weight")]
    linears = [k for k in state if k.startswith("classifier.") and k.endswith(".weight")]
    if len(convs) != 6 or len(linears) != 2:
        raise DlxError("the book's weights fit deep_cnn at width 1, depth 1 without batch norm")
    out: dict[str, torch.Tensor] = {}
    for i, key in enumerate(convs, 1):
        out[key] = torch.as_tensor(params[f"W{i}"], dtype=torch.float32).clone()
        out[key.replace(".weight", ".bias")] = torch.as_tensor(params[f"b{i}"], dtype=torch.float32).flatten()
    hidden, scores = linears
    out[hidden] = torch.as_tensor(params["W7"], dtype=torch.float32).T.contiguous()
    out[hidden.replace(".weight", ".bias")] = torch.as_tensor(params["b7"], dtype=torch.float32).flatten()
    out[scores] = 0.25 * torch.as_tensor(params["W8"], dtype=torch.float32).T.contiguous()
    out[scores.replace(".weight", ".bias")] = 0.5 * torch.as_tensor(params["b8"], dtype=torch.float32).flatten()
    return out


# The book's recipe (experiments/mnist_deep_book.yaml): what the imported run's config.yaml says.
BOOK_RECIPE: dict[str, Any] = {
    "name": "mnist_deep_book",
    "data": {"dataset": "mnist", "val_size": 5000, "batch_size": 100, "normalize": False},
    "model": {"name": "deep_cnn"},
    "init": {"name": "he_normal"},
    "optimizer": {"name": "adam", "lr": 0.001},
    "train": {"epochs": 20},
}


def import_book(path: Path, output: Path, experiment: Path | None = None) -> Path:
    """Write a run folder (config.yaml of the book's recipe, checkpoints/best.pt, summary.json) for dlx eval."""
    from dlx.build import build_initialized_model
    from dlx.checkpoint import save_checkpoint
    from dlx.config import config_from_dict, load_config
    from dlx.data.datasets import load_data
    from dlx.outputs import check_output_folder
    from dlx.record import now
    from dlx.runs import Run

    params = read_book_params(path)
    cfg = load_config(experiment, []) if experiment is not None else config_from_dict(BOOK_RECIPE)
    if cfg.model.name != "deep_cnn" or cfg.model.width != 1 or cfg.model.depth != 1:
        raise DlxError(f"{experiment}: the book's weights need model deep_cnn at width 1, depth 1")
    data = load_data(cfg.data, download=False)
    model = build_initialized_model(cfg, data)
    state = book_state_dict(params, model)
    model.load_state_dict(state)  # the check: every tensor fits
    folder = check_output_folder(output)
    run = Run(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run.acquire()
    try:
        run.write_config(cfg.to_yaml())
        save_checkpoint(run.best_checkpoint, {"model": model.state_dict(), "epoch": 0, "metrics": {},
                                              "classes": list(data.classes)})  # fmt: skip
        run.write_summary({"status": "completed", "kind": "imported", "name": cfg.name, "run_id": folder.name,
                           "run_dir": str(folder), "model": {"name": "deep_cnn", "width": 1.0, "depth": 1.0},
                           "dataset": cfg.data.dataset, "num_classes": data.num_classes, "classes": data.classes,
                           "source": str(path), "started_at": now(), "ended_at": now()})  # fmt: skip
    finally:
        run.release()
    return folder
