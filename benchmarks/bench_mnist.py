"""dlx against a plain PyTorch loop, in one process, on full MNIST.

    python benchmarks/bench_mnist.py                       # the book's recipe, 3 epochs each
    python benchmarks/bench_mnist.py --epochs 8 --config experiments/mnist_deep_book.yaml

Both sides train the same model (same init, optimizer, learning rate and batch size) on the
same 55,000 training images and measure the 10,000 test images after every epoch:
- dlx: ``dlx train`` as a library call (whole dataset on the device, batched index slices);
- plain: torchvision.datasets.MNIST + DataLoader + ToTensor, the usual hand-written loop.

Printed per side: seconds per epoch (training only), images/s, MFU, and the training seconds
until the test accuracy first reached 99.0% and 99.3%. MFU = 3 x forward FLOPs per image
(torch.utils.flop_counter; backward ~ 2x forward) x images/s / a float32 matmul peak measured
here on the same device.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlx.config import load_config  # noqa: E402
from dlx.devices import resolve_device  # noqa: E402
from dlx.init import initialize  # noqa: E402
from dlx.modelinfo import flops_per_image  # noqa: E402
from dlx.models import build_model  # noqa: E402
from dlx.optim import build_optimizer  # noqa: E402
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


def plain_loop(cfg, epochs: int, device: torch.device) -> list[tuple[float, float, float]]:
    """The hand-written baseline: torchvision MNIST + DataLoader + ToTensor; returns (seconds, img/s, test acc)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    root = torchvision_mnist_root()
    steps = [transforms.ToTensor()]
    if cfg.data.normalize:
        steps.append(transforms.Normalize((0.1307,), (0.3081,)))
    tf = transforms.Compose(steps)
    train_full = datasets.MNIST(root, train=True, download=False, transform=tf)
    test = datasets.MNIST(root, train=False, download=False, transform=tf)
    # The same 55,000 training images dlx uses (5,000 held out with the same seeded split).
    order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(cfg.data.split_seed))
    train = Subset(train_full, order[cfg.data.val_size :].sort().values.tolist())
    train_loader = DataLoader(train, batch_size=cfg.data.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=cfg.data.eval_batch_size)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, in_channels=1, num_classes=10, image_size=28, width=cfg.model.width,
                        depth=cfg.model.depth, dropout=cfg.regularization.dropout,
                        batch_norm=cfg.regularization.batch_norm, args=cfg.model.args)  # fmt: skip
    initialize(model, cfg.init.name, bias=cfg.init.bias, args=cfg.init.args)
    model.to(device)
    opt = build_optimizer(cfg.optimizer.name, model.parameters(), cfg.optimizer.lr, cfg.optimizer.weight_decay,
                          cfg.optimizer.args)  # fmt: skip
    out = []
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        n = 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        out.append((seconds, n / seconds, correct / len(test)))
        print(f"  plain epoch {len(out)}: {seconds:.1f}s  {n / seconds:,.0f} img/s  test {100 * out[-1][2]:.2f}%")
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "experiments" / "mnist_deep_book.yaml"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-plain", action="store_true", help="measure dlx only")
    args = parser.parse_args()

    overrides = [f"train.epochs={args.epochs}", f"train.device={args.device}", "train.test_every_epoch=true",
                 "output.plots=false"]  # fmt: skip
    cfg = load_config(args.config, overrides)
    device = resolve_device(cfg.train.device)
    peak = matmul_peak(device)
    model = build_model(cfg.model.name, in_channels=1, num_classes=10, image_size=28, width=cfg.model.width,
                        depth=cfg.model.depth, dropout=cfg.regularization.dropout,
                        batch_norm=cfg.regularization.batch_norm, args=cfg.model.args)  # fmt: skip
    fwd = flops_per_image(model, (1, 28, 28))
    print(f"device {device} ({torch.get_num_threads()} threads), fp32 matmul peak {peak / 1e9:,.1f} GFLOP/s")
    print(f"model {cfg.model.name}: {fwd / 1e6:.2f} MFLOPs forward per image; batch {cfg.data.batch_size}; "
          f"{args.epochs} epochs; config {args.config}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="dlx-bench-runs-") as runs:
        summary = start_run(cfg, runs_dir=runs, quiet=True)
        lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
    dlx_epochs = [(r["seconds"], r["images_per_s"], r["test_acc"]) for r in rows]
    for i, (s, ips, acc) in enumerate(dlx_epochs, 1):
        print(f"  dlx   epoch {i}: {s:.1f}s  {ips:,.0f} img/s  test {100 * acc:.2f}%")
    plain = [] if args.skip_plain else plain_loop(cfg, args.epochs, device)

    def line(name: str, eps: list[tuple[float, float, float]]) -> tuple[float, str]:
        sec = sum(e[0] for e in eps) / len(eps)
        ips = sum(e[1] for e in eps) / len(eps)
        mfu = 3 * fwd * ips / peak
        hist = [(e[0], e[2]) for e in eps]
        text = (f"{name:<6} {sec:>9.1f} {ips:>10,.0f} {100 * mfu:>7.2f}% {seconds_to(hist, 0.99):>12} "
                f"{seconds_to(hist, 0.993):>12} {100 * eps[-1][2]:>9.2f}%")  # fmt: skip
        return ips, text

    print()
    print(f"{'':<6} {'s/epoch':>9} {'img/s':>10} {'MFU':>8} {'s to 99.0%':>12} {'s to 99.3%':>12} {'final acc':>10}")
    ips_dlx, text = line("dlx", dlx_epochs)
    print(text)
    if plain:
        ips_plain, text = line("plain", plain)
        print(text)
        print(f"\ndlx / plain images/s: {ips_dlx / ips_plain:.2f}x")


if __name__ == "__main__":
    main()
