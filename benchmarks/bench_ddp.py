"""One process vs two gloo processes (DDP) on the same CPU cores, with the same global batch.

    python benchmarks/bench_ddp.py                                  # deep_cnn, 3 epochs of 10,000 images
    python benchmarks/bench_ddp.py --model lenet5 --epochs 4 --repeat 3 --json /tmp/ddp.json

(a) ``dlx train --devices 1`` with OMP_NUM_THREADS = cores and batch B; (b) ``dlx train --devices 2`` with
OMP_NUM_THREADS = cores / 2 per process and batch B/2 per process: the same cores and the same global batch.
Both are the real command line; images/s come from each run's metrics (epochs after the first: warm-up),
mean +- std over --repeat runs. Honest even when the ratio is below 1: two processes on the same cores add
an all-reduce per step and lose the larger per-thread matrices.

The all-reduce cost is measured apart: in a 2-process gloo group (1 thread each), ``dist.all_reduce`` of a
float32 tensor as large as the model's parameters, median and p90 of many calls, also as a share of the
2-process step time (global batch / images/s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA_DIR = Path(os.environ.get("DLX_DATA_DIR") or REPO.parent / "shared" / "datasets")


def cpu_line() -> str:
    from dlx.provenance import cpu_flags, cpu_model

    extra = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    return f"{cpu_model()}; {cores()} cores; {' '.join(extra) or 'no AVX-512'}"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def experiment(folder: Path, a: argparse.Namespace) -> Path:
    cfg = {
        "name": "bench_ddp",
        "seed": 0,
        "data": {"dataset": "mnist", "data_dir": str(DATA_DIR) if DATA_DIR.exists() else None, "val_size": 1000,
                 "train_size": a.train_size, "test_size": 2000, "batch_size": a.batch},
        "model": {"name": a.model},
        "optimizer": {"name": "adam", "lr": 0.001},
        "train": {"epochs": a.epochs, "device": "cpu", "train_sample": 1000},
        "output": {"runs_dir": str(folder / "runs"), "plots": False},
    }  # fmt: skip
    path = folder / "bench_ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(path: Path, processes: int, batch: int, run_id: str, threads: int) -> tuple[dict[str, Any], list[str]]:
    command = [sys.executable, "-m", "dlx", "train", str(path), "--devices", str(processes), "--set",
               f"data.batch_size={batch // processes}", "--run-id", run_id, "-q"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=path.parent)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    run = path.parent / "runs" / "bench_ddp" / run_id
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary["timed"] = rows[1:] if len(rows) > 1 else rows
    return summary, command


def _all_reduce_worker(rank: int, port: int, numel: int, reps: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    t = torch.randn(numel)
    for _ in range(5):
        dist.all_reduce(t)
    times = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def all_reduce_ms(numel: int, reps: int) -> tuple[float, float]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    mp.start_processes(_all_reduce_worker, args=(port, numel, reps, out), nprocs=2, start_method="spawn")
    times = sorted(json.loads(Path(out).read_text()))
    Path(out).unlink()
    return 1000 * statistics.median(times), 1000 * times[int(0.9 * (len(times) - 1))]


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):,.0f} +- {sd:,.0f} (n={len(values)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deep_cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--batch", type=int, default=100, help="global batch (each of 2 processes takes half)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--reduce-reps", type=int, default=200)
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", type=Path, help="keep the run folders here")
    a = p.parse_args()
    from dlx.models import build_model

    n = cores()
    folder = a.keep or Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = experiment(folder, a)
    print(f"cpu: {cpu_line()} | torch {torch.__version__} | {a.model}, global batch {a.batch}, "
          f"{a.train_size:,} images, {a.epochs} epochs (images/s of epochs 2..{a.epochs}), {a.repeat} runs each")  # fmt: skip
    results: dict[str, Any] = {"cpu": cpu_line(), "torch": torch.__version__, "args": vars(a) | {"json": None,
                                                                                                 "keep": None}}  # fmt: skip
    try:
        for processes in (1, 2):
            threads = max(1, n // processes)
            rates, accs, commands = [], [], []
            for r in range(a.repeat):
                summary, command = train(path, processes, a.batch, f"p{processes}-{r}", threads)
                rates.append(statistics.mean(row["images_per_s"] for row in summary["timed"]))
                accs.append(summary["test_acc"])
                commands.append(f"OMP_NUM_THREADS={threads} python {' '.join(command[1:])}")
            results[f"{processes}p"] = {"images_per_s": rates, "test_acc": accs, "threads": threads}
            print(f"{processes} process(es) x {threads} thread(s), batch {a.batch // processes} each: "
                  f"{mean_std(rates)} img/s; test acc {statistics.mean(accs):.4f}\n  {commands[0]}")  # fmt: skip
        one, two = (statistics.mean(results[k]["images_per_s"]) for k in ("1p", "2p"))
        print(f"2 processes / 1 process: x{two / one:.2f}")
        model = build_model(a.model, in_channels=1, num_classes=10, image_size=28)
        numel = sum(t.numel() for t in model.parameters())
        median, p90 = all_reduce_ms(numel, a.reduce_reps)
        step_ms = 1000 * a.batch / two
        print(f"all-reduce of {numel:,} float32 parameters between 2 gloo processes: median {median:.2f} ms, "
              f"p90 {p90:.2f} ms per step = {100 * median / step_ms:.1f}% of a {step_ms:.1f} ms 2-process step")  # fmt: skip
        results.update(ratio=two / one, all_reduce_ms={"median": median, "p90": p90}, parameters=numel,
                       step_ms_2p=step_ms)  # fmt: skip
        if a.json:
            a.json.write_text(json.dumps(results, indent=2))
    finally:
        if a.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
