"""``dlx export``: a trained run's model as a file to ship (TorchScript, ONNX or safetensors), checked on reload.

The model is rebuilt from the run's config.yaml with its checkpoint's weights, on the CPU, in eval mode. The
exported file is loaded back (torch.jit.load, onnxruntime, safetensors.torch.load_file into a fresh model) and
its logits on a batch of the run's test images are compared with the run's model: the largest difference is
reported, and an export that disagrees is refused. Beside the model file, ``<file>.json`` says what the model
expects: input shape, normalization (mean/std over [0, 1] pixels) and the class names in output order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dlx.errors import DlxError, first_line
from dlx.runs import write_bytes_atomic, write_json_atomic

FORMATS = {"torchscript": ".pt", "onnx": ".onnx", "safetensors": ".safetensors"}
TOLERANCE = 1e-4  # the largest logit difference an export may show against the run's model


def export_run(
    target: str | Path, *, fmt: str, output: Path | None = None, checkpoint: str = "best", batch: int = 8
) -> dict[str, Any]:
    """Export a run's model; returns what was written and how well the reloaded file agrees."""
    from dlx.assess import load_trained
    from dlx.build import make_batches, normalization

    if fmt not in FORMATS:
        raise DlxError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")
    trained, setup = load_trained(target, checkpoint, ["train.precision=fp32"], device=torch.device("cpu"))
    cfg = setup.config
    model = setup.model.float().eval()
    x, _ = next(iter(make_batches(setup, setup.test, batch_size=batch)))
    x = x.contiguous()
    with torch.inference_mode():
        reference = model(x)
    path = output or trained.run.path / "export" / f"model{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    reloaded = {"torchscript": _torchscript, "onnx": _onnx, "safetensors": _safetensors}[fmt](model, x, path, setup)
    diff = (reloaded - reference).abs().max().item()
    if not diff <= TOLERANCE:
        raise DlxError(f"{path}: the reloaded {fmt} model differs from the run's by up to {diff:.3g} in its logits "
                       f"(allowed {TOLERANCE:g}); not exported")  # fmt: skip
    data = setup.data
    mean, std = normalization(cfg, data)
    info = {
        "format": fmt,
        "file": path.name,
        "run": str(trained.run.path),
        "checkpoint": str(trained.checkpoint),
        "model": cfg.model.name,
        "input": [data.in_channels, data.image_size, data.image_size],
        "normalize": {"mean": list(mean), "std": list(std)} if mean is not None and std is not None else None,
        "classes": list(data.classes),
        "max_abs_logit_diff": diff,
        "checked_images": int(x.shape[0]),
        "bytes": path.stat().st_size,
    }
    write_json_atomic(path.with_name(path.name + ".json"), info)
    return {**info, "path": str(path)}


def _torchscript(model: torch.nn.Module, x: torch.Tensor, path: Path, setup: Any) -> torch.Tensor:
    import io
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice: the format is still what torch.jit loads
        traced = torch.jit.trace(model, x[:1])
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        write_bytes_atomic(path, buf.getvalue())
        loaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return loaded(x)


def _onnx(model: torch.nn.Module, x: torch.Tensor, path: Path, setup: Any) -> torch.Tensor:
    try:
        import onnxruntime
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it
    except ImportError:
        raise DlxError("--format onnx needs onnx, onnxscript and onnxruntime, an optional extra: "
                       "pip install 'dlx[onnx]'") from None  # fmt: skip
    import logging
    import os
    import warnings

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(model, (x,), dynamic_shapes=({0: batch},), input_names=["images"],
                                        output_names=["logits"], dynamo=True, verbose=False)  # fmt: skip
        except Exception as e:  # an operator the exporter cannot translate: say which, not a traceback
            raise DlxError(f"--format onnx: torch.onnx cannot export {type(model).__name__}: {first_line(e)}") from None
    temp = path.with_name(path.name + ".tmp")
    program.save(str(temp))
    os.replace(temp, path)  # atomic: a reader never sees half a model
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


def _safetensors(model: torch.nn.Module, x: torch.Tensor, path: Path, setup: Any) -> torch.Tensor:
    try:
        from safetensors.torch import load_file, save
    except ImportError:
        raise DlxError("--format safetensors needs safetensors: pip install safetensors") from None
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"dlx_config": json.dumps(setup.config.to_dict()), "classes": json.dumps(list(setup.data.classes))}
    write_bytes_atomic(path, save(state, metadata=meta))
    fresh = _rebuild(setup)
    fresh.load_state_dict(load_file(str(path)))
    with torch.inference_mode():
        return fresh.eval()(x)


def _rebuild(setup: Any) -> torch.nn.Module:
    """The run's model architecture with fresh weights (what a user does before loading safetensors)."""
    from dlx.build import build_initialized_model

    return build_initialized_model(setup.config, setup.data).float()
