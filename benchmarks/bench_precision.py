"""Training steps per second in fp32, bf16 and fp16 autocast on this machine's CPU (or a GPU).

    python benchmarks/bench_precision.py                          # the book's deep CNN, batch 100
    python benchmarks/bench_precision.py --model resnet20 --input 3x32x32 --steps 20

Why dlx refuses what it refuses: on a CPU, fp16 autocast has no fast kernels, and bf16 is fast only with
AVX512-BF16 or AMX (``torch.cpu._is_avx512_bf16_supported``). Each precision trains the same model from the
same weights on random images (forward, cross-entropy, backward, Adam step); the first steps are warm-up.
Prints the CPU, its bf16 flags, torch, threads, then images/s per precision (median of --repeat rounds) and
the ratio to fp32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlx.devices import native_cpu_bf16  # noqa: E402
from dlx.models import build_model  # noqa: E402
from dlx.provenance import cpu_flags, cpu_model  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def images_per_s(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None,
                 steps: int, warmup: int) -> float:  # fmt: skip
    device = x.device
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deep_cnn")
    p.add_argument("--input", default="1x28x28", help="CxHxW")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", default="fp32,bf16,fp16")
    a = p.parse_args()
    device = torch.device(a.device)
    c, h, w = (int(v) for v in a.input.split("x"))
    torch.manual_seed(0)
    base = build_model(a.model, in_channels=c, num_classes=10, image_size=h).to(device)
    x = torch.randn(a.batch, c, h, w, device=device)
    y = torch.randint(0, 10, (a.batch,), device=device)
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith(("amx", "avx512f")))
    print(f"cpu: {cpu_model()} | flags: {' '.join(flags) or '-'} | native bf16: {native_cpu_bf16()}")
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | device {device} | "
          f"{a.model} {a.input} batch {a.batch} | {a.steps} timed steps after {a.warmup}, {a.repeat} rounds")  # fmt: skip
    results: dict[str, float] = {}
    for name in a.precisions.split(","):
        rates = [images_per_s(copy.deepcopy(base), x, y, DTYPES[name], a.steps, a.warmup) for _ in range(a.repeat)]
        results[name] = statistics.median(rates)
        spread = f" (min {min(rates):,.0f}, max {max(rates):,.0f})" if len(rates) > 1 else ""
        ratio = f"  x{results[name] / results['fp32']:.2f} of fp32" if "fp32" in results else ""
        print(f"{name:>5}: {results[name]:>9,.0f} img/s{spread}{ratio}", flush=True)


if __name__ == "__main__":
    main()
