"""dlx against pytorch/examples' MNIST recipe (mnist/main.py), the same network and recipe on both sides.

    python benchmarks/bench_examples.py                  # 1 epoch each, alternating, 3 repeats, medians
    python benchmarks/bench_examples.py --epochs 2 --repeat 1
    python benchmarks/bench_examples.py --device cuda    # main.py on its accelerator path; dlx with train.device cuda

pytorch/examples: ``Net`` (conv 32, conv 64, max pool, dropout 0.25, fc 128, dropout 0.5, fc 10, log_softmax), batch 64,
Adadelta lr 1.0, StepLR(step_size=1, gamma=0.7), Normalize((0.1307,), (0.3081,)), torchvision's MNIST through a
DataLoader, trained on all 60,000 images and tested on 10,000: its loop, written here as main.py writes it (on a
GPU with main.py's accelerator settings: one loader worker, persistent, pinned memory, and its loss.item() every
10 batches for the log line, which is not printed here).
dlx: the same ``Net`` through ``model.class_path``, data.mean/std 0.1307/0.3081, val_size 0, the same optimizer and
schedule, channels_last by default (auto: the Net has convolutions). Printed: the CPU, torch, threads; per side
the median training seconds per epoch, images/s, MFU (as bench_mnist.py defines it), wall seconds (the whole
call: data, model, training, test) and test accuracy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_mnist import matmul_peak, torchvision_mnist_root  # noqa: E402
from dlx.config import config_from_dict  # noqa: E402
from dlx.modelinfo import flops_per_image  # noqa: E402
from dlx.provenance import cpu_model, device_name  # noqa: E402
from dlx.session import start_run  # noqa: E402


class Net(nn.Module):
    """pytorch/examples mnist/main.py's network, unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def examples_side(epochs: int, seed: int, device: torch.device) -> dict[str, float]:
    """pytorch/examples' loop: torchvision MNIST, DataLoader(batch 64, shuffle), Adadelta, StepLR, nll_loss."""
    from torch.optim.lr_scheduler import StepLR
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    wall = time.perf_counter()
    root = torchvision_mnist_root("dlx-bench-examples-")
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    accel = {"num_workers": 1, "persistent_workers": True, "pin_memory": True} if device.type != "cpu" else {}
    train_loader = DataLoader(datasets.MNIST(root, train=True, transform=tf), batch_size=64, shuffle=True, **accel)
    test_loader = DataLoader(datasets.MNIST(root, train=False, transform=tf), batch_size=1000, **accel)
    torch.manual_seed(seed)
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    train_seconds = 0.0
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if batch_idx % 10 == 0:  # main.py's log_interval: it prints loss.item()
                loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - t
        scheduler.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            correct += (model(data).argmax(1) == target).sum().item()
    shutil.rmtree(root, ignore_errors=True)
    n = len(train_loader.dataset) * epochs  # type: ignore[arg-type]
    return {"train_s": train_seconds, "img_s": n / train_seconds, "wall_s": time.perf_counter() - wall,
            "test_acc": correct / 10_000}  # fmt: skip


def dlx_side(epochs: int, seed: int, runs_dir: Path, device: str) -> dict[str, float]:
    """The same recipe as a dlx experiment (model.class_path: this file's Net)."""
    wall = time.perf_counter()
    cfg = config_from_dict({
        "name": "examples_mnist", "seed": seed,
        "data": {"dataset": "mnist", "val_size": 0, "batch_size": 64, "eval_batch_size": 1000,
                 "mean": [0.1307], "std": [0.3081]},
        "model": {"class_path": "benchmarks.bench_examples:Net"},
        "init": {"name": "default"},
        "optimizer": {"name": "adadelta", "lr": 1.0},
        "schedule": {"name": "step", "args": {"step_size": 1, "gamma": 0.7}},
        "train": {"epochs": epochs, "device": device},
        "output": {"runs_dir": str(runs_dir), "plots": False, "gallery_size": 0},
    })  # fmt: skip
    s = start_run(cfg, quiet=True)
    return {"train_s": s["train_seconds"], "img_s": s["images_per_s"], "wall_s": time.perf_counter() - wall,
            "test_acc": s["test_acc"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)  # main.py's default seed
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: both sides train there")
    args = p.parse_args()
    device = torch.device(args.device)
    runs_dir = Path(tempfile.mkdtemp(prefix="dlx-bench-examples-runs-"))
    results: dict[str, list[dict[str, float]]] = {"pytorch/examples": [], "dlx": []}
    for i in range(args.repeat):  # alternating, so that a slow moment of the machine hits both sides
        results["pytorch/examples"].append(examples_side(args.epochs, args.seed, device))
        results["dlx"].append(dlx_side(args.epochs, args.seed, runs_dir, args.device))
        print(f"round {i + 1}: " + "; ".join(f"{k} {v[-1]['train_s']:.1f}s {100 * v[-1]['test_acc']:.2f}%"
                                             for k, v in results.items()))  # fmt: skip
    shutil.rmtree(runs_dir, ignore_errors=True)
    gpu = f"; gpu: {device_name(device)}" if device.type == "cuda" else ""
    print(f"cpu: {cpu_model()}{gpu}; torch {torch.__version__}; {torch.get_num_threads()} threads; "
          f"{args.epochs} epoch(s), {args.repeat} repeats, medians")  # fmt: skip
    peak, fwd = matmul_peak(device), flops_per_image(Net(), (1, 28, 28))
    print(f"fp32 matmul peak {peak / 1e9:,.1f} GFLOP/s; Net {fwd / 1e6:.2f} MFLOPs forward per image; MFU = 3 x "
          f"forward FLOPs x images/s / peak")  # fmt: skip
    print(f"{'':18} {'train s/epoch':>14} {'images/s':>10} {'MFU':>7} {'wall s':>8} {'test acc':>9}")
    for side, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"{side:18} {med['train_s'] / args.epochs:>14.1f} {med['img_s']:>10,.0f} "
              f"{100 * 3 * fwd * med['img_s'] / peak:>6.1f}% {med['wall_s']:>8.1f} {100 * med['test_acc']:>8.2f}%")  # fmt: skip
    ex, dl = (statistics.median(r["train_s"] for r in results[k]) for k in ("pytorch/examples", "dlx"))
    print(f"dlx / examples training time: {dl / ex:.2f}x")


if __name__ == "__main__":
    main()
