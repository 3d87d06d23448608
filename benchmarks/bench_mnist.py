"""dlx against two hand-written PyTorch loops, in one process, on full MNIST.

    python benchmarks/bench_mnist.py                       # the book's recipe: 1 epoch a side, 3 rounds, medians
    python benchmarks/bench_mnist.py --epochs 3 --repeat 3 --config experiments/mnist_deep.yaml
    python benchmarks/bench_mnist.py --sides dlx careful --set train.compile=true   # both sides compiled

The three sides train the same model (same init, optimizer, learning rate and batch size) on the same
training images (data.val_size held out) and measure the 10,000 test images after every epoch:
- dlx: ``dlx train`` as a library call (whole dataset on the device, batched index slices);
- plain: torchvision.datasets.MNIST + DataLoader + ToTensor, the usual hand-written loop;
- careful: what a strong engineer writes in 40 lines: the images as one normalized tensor on the device, a
  permutation sliced per batch, channels_last when dlx would use it, zero_grad(set_to_none), inference_mode,
  and torch.compile when the config has it (compiled before the timed epochs, as dlx does).
Both hand-written sides train in the config's train.precision (``auto`` resolved as dlx resolves it): bf16 or
fp16 autocast around forward and loss, with a GradScaler for fp16, as torch's AMP recipe writes it.
The hand-written sides keep the optimizer's constant rate (no schedule, no augmentation): their accuracy
matches dlx's only on a config without them, such as the book's recipe. The sides alternate within each round (the order
rotates between rounds) so drifts of the machine reach all of them.

Printed: the CPU, threads and versions; per side the median over rounds of the seconds per epoch (training
only), images/s, MFU, the test accuracy after the last epoch, and (with several epochs) the training seconds
until the test accuracy first reached 99.0% and 99.3% (first round). MFU = 3 x forward FLOPs per image
(torch.utils.flop_counter; backward ~ 2x forward) x images/s / a float32 matmul peak measured here.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlx.build import build_initialized_model, uses_channels_last  # noqa: E402
from dlx.config import load_config  # noqa: E402
from dlx.devices import AMP_DTYPES, resolve_device, resolve_precision  # noqa: E402
from dlx.modelinfo import flops_per_image  # noqa: E402
from dlx.optim import build_optimizer  # noqa: E402
from dlx.provenance import cpu_model  # noqa: E402
from dlx.session import start_run  # noqa: E402


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """Sustained float32 matmul FLOP/s on this device (best of a few timed rounds)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def seconds_to(history: list[tuple[float, float]], target: float) -> str:
    """Cumulative training seconds at the first epoch whose test accuracy reached ``target``."""
    total = 0.0
    for seconds, acc in history:
        total += seconds
        if acc >= target:
            return f"{total:.1f}"
    return "not reached"


def torchvision_mnist_root(prefix: str = "dlx-bench-") -> Path:
    """A temp folder holding dlx's packaged MNIST as torchvision's MNIST/raw files (the caller removes it)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (resources.files("dlx.data") / "mnist").iterdir():
        if gz.name.endswith(".gz"):
            with gzip.open(str(gz)) as src, open(raw / gz.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


Epochs = list[tuple[float, float, float]]  # per epoch: training seconds, images/s, test accuracy


def fresh_model(cfg, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The config's model (registered, sequential or class_path), initialized and seeded as dlx does, on
    ``device``, with its optimizer."""
    from types import SimpleNamespace

    mnist = SimpleNamespace(in_channels=1, num_classes=10, image_size=28)  # what build_initialized_model reads
    model = build_initialized_model(cfg, mnist).to(device)
    opt = build_optimizer(cfg.optimizer.name, model.parameters(), cfg.optimizer.lr, cfg.optimizer.weight_decay,
                          cfg.optimizer.args)  # fmt: skip
    return model, opt


def training_indices(cfg, n: int) -> torch.Tensor:
    """The 55,000 training images dlx uses (data.val_size held out by the same seeded split)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.data.split_seed))
    return order[cfg.data.val_size :].sort().values


def dlx_side(cfg) -> Epochs:
    """``dlx train`` as a library call; its metrics.jsonl."""
    with tempfile.TemporaryDirectory(prefix="dlx-bench-runs-") as runs:
        summary = start_run(cfg, runs_dir=runs, quiet=True)
        lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    return [(r["seconds"], r["images_per_s"], r["test_acc"]) for r in map(json.loads, lines)]


def amp_for(cfg, device: torch.device) -> tuple[Callable[[], torch.autocast], torch.amp.GradScaler]:
    """The autocast of the config's (resolved) precision, as a context factory (off for fp32), and a GradScaler
    that works only for fp16."""
    precision = resolve_precision(cfg, device).train.precision
    amp = AMP_DTYPES[precision]
    autocast = functools.partial(torch.autocast, device.type, dtype=amp, enabled=amp is not None)
    return autocast, torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def plain_loop(cfg, epochs: int, device: torch.device) -> Epochs:
    """The usual hand-written baseline: torchvision MNIST + DataLoader + ToTensor."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    root = torchvision_mnist_root()
    steps = [transforms.ToTensor()]
    if cfg.data.normalize:
        steps.append(transforms.Normalize((0.1307,), (0.3081,)))
    tf = transforms.Compose(steps)
    train_full = datasets.MNIST(root, train=True, download=False, transform=tf)
    test = datasets.MNIST(root, train=False, download=False, transform=tf)
    train = Subset(train_full, training_indices(cfg, len(train_full)).tolist())
    train_loader = DataLoader(train, batch_size=cfg.data.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=cfg.data.eval_batch_size)
    model, opt = fresh_model(cfg, device)
    autocast, scaler = amp_for(cfg, device)
    out = []
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        n = 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            with autocast():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            n += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        model.eval()
        correct = 0
        with torch.no_grad(), autocast():
            for x, y in test_loader:
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        out.append((seconds, n / seconds, correct / len(test)))
    shutil.rmtree(root, ignore_errors=True)
    return out


def careful_loop(cfg, epochs: int, device: torch.device) -> Epochs:
    """A strong engineer's loop: in-memory normalized tensors on the device, index slices, channels_last."""
    from torchvision import datasets

    root = torchvision_mnist_root()
    tensors = []
    for train in (True, False):
        ds = datasets.MNIST(root, train=train, download=False)
        x = ds.data.unsqueeze(1).float().div_(255)
        if cfg.data.normalize:
            x = (x - 0.1307) / 0.3081
        tensors.append((x.to(device), ds.targets.to(device)))
    shutil.rmtree(root, ignore_errors=True)
    keep = training_indices(cfg, len(tensors[0][0])).to(device)
    (x_train, y_train), (x_test, y_test) = (tensors[0][0][keep], tensors[0][1][keep]), tensors[1]
    model, opt = fresh_model(cfg, device)
    layout = torch.channels_last if uses_channels_last(cfg, model) else torch.contiguous_format
    model.to(memory_format=layout)
    autocast, scaler = amp_for(cfg, device)
    batch, out = cfg.data.batch_size, []
    if cfg.train.compile:  # as dlx: compiled before the timed epochs (a backward on one batch, then no step)
        model = torch.compile(model)
        with autocast():  # the graph the epochs will run
            warm = F.cross_entropy(model(x_train[:batch].contiguous(memory_format=layout)), y_train[:batch])
        warm.backward()
        opt.zero_grad(set_to_none=True)
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        perm = torch.randperm(len(y_train), device=device)
        n = len(perm) // batch * batch  # whole batches, as dlx (drop_last)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            with autocast():
                loss = F.cross_entropy(model(x_train[idx].contiguous(memory_format=layout)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        model.eval()
        with torch.inference_mode(), autocast():
            correct = sum(int((model(x_test[i : i + 1000].contiguous(memory_format=layout)).argmax(1)
                               == y_test[i : i + 1000]).sum()) for i in range(0, len(y_test), 1000))  # fmt: skip
        out.append((seconds, n / seconds, correct / len(y_test)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "experiments" / "mnist_deep_book.yaml"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each side once per round (medians)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sides", nargs="+", default=["dlx", "plain", "careful"], choices=["dlx", "plain", "careful"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every side, as dlx train --set (e.g. train.compile=true)")  # fmt: skip
    args = parser.parse_args()

    overrides = [f"train.epochs={args.epochs}", f"train.device={args.device}", "train.test_every_epoch=true",
                 "output.plots=false", *args.set]  # fmt: skip
    cfg = load_config(args.config, overrides)
    device = resolve_device(cfg.train.device)
    peak = matmul_peak(device)
    model, _ = fresh_model(cfg, torch.device("cpu"))
    fwd = flops_per_image(model, (1, 28, 28))
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; device {device} ({torch.get_num_threads()} threads); torch "
          f"{torch.__version__}, Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print(f"fp32 matmul peak {peak / 1e9:,.1f} GFLOP/s; model {cfg.model.name}: {fwd / 1e6:.2f} MFLOPs forward per "
          f"image; batch {cfg.data.batch_size}; {resolve_precision(cfg, device).train.precision}; {args.epochs} "
          f"epoch(s) x {args.repeat} rounds; {args.config}")  # fmt: skip

    run = {"dlx": lambda: dlx_side(cfg), "plain": lambda: plain_loop(cfg, args.epochs, device),
           "careful": lambda: careful_loop(cfg, args.epochs, device)}  # fmt: skip
    results: dict[str, list[Epochs]] = {side: [] for side in args.sides}
    for r in range(args.repeat):
        order = args.sides[r % len(args.sides) :] + args.sides[: r % len(args.sides)]
        for side in order:
            eps = run[side]()
            results[side].append(eps)
            print(f"  round {r + 1} {side:<8} {statistics.mean(e[1] for e in eps):>8,.0f} img/s  "
                  f"test {100 * eps[-1][2]:.2f}%", flush=True)  # fmt: skip

    print(f"\n{'':<8} {'s/epoch':>9} {'img/s':>10} {'MFU':>8} {'s to 99.0%':>12} {'s to 99.3%':>12} {'final acc':>10}")
    median_ips = {}
    for side, rounds in results.items():
        sec = statistics.median(statistics.mean(e[0] for e in eps) for eps in rounds)
        ips = median_ips[side] = statistics.median(statistics.mean(e[1] for e in eps) for eps in rounds)
        acc = statistics.median(eps[-1][2] for eps in rounds)
        hist = [(e[0], e[2]) for e in rounds[0]]
        print(f"{side:<8} {sec:>9.1f} {ips:>10,.0f} {100 * 3 * fwd * ips / peak:>7.1f}% {seconds_to(hist, 0.99):>12} "
              f"{seconds_to(hist, 0.993):>12} {100 * acc:>9.2f}%")  # fmt: skip
    if "dlx" in median_ips:
        for other in ("plain", "careful"):
            if other in median_ips:
                print(f"dlx / {other} images/s: {median_ips['dlx'] / median_ips[other]:.2f}x")


if __name__ == "__main__":
    main()
