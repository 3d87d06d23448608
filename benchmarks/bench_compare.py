"""How long ``dlx compare`` takes to read N run folders (no pictures, no printing: loading, grouping, sorting).

    python benchmarks/bench_compare.py                 # 3,000 runs in a temporary folder
    python benchmarks/bench_compare.py -n 500 --profile
    python benchmarks/bench_compare.py --keep runs-bench   # write them there (and reuse them next time)

Each run folder is what ``dlx train`` writes: the full resolved config.yaml (``ExperimentConfig.to_yaml``,
~70 lines), a summary.json with the provenance fields and a diagnosis, and a 20-row metrics.jsonl. The runs
form a sweep: widths x depths x learning rates x seeds, so rows group several seeds each. Printed: the CPU
model, then seconds per ``dlx.compare.compare([folder])`` (``--repeat`` times; the best is the figure to
quote, and only on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlx.compare import compare  # noqa: E402
from dlx.config import config_from_dict  # noqa: E402
from dlx.provenance import cpu_model  # noqa: E402

WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
DEPTHS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
LRS = (0.0003, 0.001, 0.003, 0.01, 0.03)


def history(acc: float, epochs: int = 20) -> list[dict[str, float]]:
    rows = []
    for e in range(1, epochs + 1):
        f = e / epochs
        rows.append({
            "epoch": e, "train_loss": round(2.3 * (1 - f) + 0.02, 6), "train_acc": round(0.1 + 0.89 * f, 6),
            "val_loss": round(2.3 * (1 - f) + 0.05, 6), "val_acc": round(0.1 + (acc - 0.1) * f, 6),
            "running_loss": round(2.3 * (1 - f) + 0.03, 6), "running_acc": round(0.1 + 0.88 * f, 6),
            "lr": 0.001, "seconds": 12.345, "images_per_s": 4455.5, "eval_seconds": 1.234,
        })  # fmt: skip
    return rows


def make_runs(root: Path, n: int) -> None:
    """``n`` run folders below ``root/bench``: every (width, depth, lr) cell, seeds until there are n."""
    base = {
        "name": "bench",
        "data": {"dataset": "mnist", "val_size": 5000, "batch_size": 128},
        "model": {"name": "deep_cnn"},
        "optimizer": {"name": "adam"},
        "train": {"epochs": 20, "device": "cpu"},
        "output": {"runs_dir": str(root)},
    }
    cells = [(w, d, lr) for w in WIDTHS for d in DEPTHS for lr in LRS]
    for i in range(n):
        (w, d, lr), seed = cells[i % len(cells)], i // len(cells)
        run_id = f"w{w:g}-d{d:g}-lr{lr:g}-s{seed}"
        cfg = dict(base, seed=seed)
        cfg["model"] = {"name": "deep_cnn", "width": w, "depth": d}
        cfg["optimizer"] = {"name": "adam", "lr": lr}
        path = root / "bench" / run_id
        path.mkdir(parents=True)
        (path / "config.yaml").write_text(config_from_dict(cfg).to_yaml())
        acc = 0.95 + 0.004 * w - 0.001 * d + 0.0001 * seed
        rows = history(acc)
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary = {
            "status": "completed", "name": "bench", "run_id": run_id, "run_dir": str(path),
            "model": {"name": "deep_cnn", "width": w, "depth": d}, "dataset": "mnist", "num_classes": 10,
            "seed": seed, "parameters": int(100_000 * w * w * d), "flops_per_image": int(5e6 * w * w * d),
            "train_images": 55000, "val_images": 5000, "test_images": 10000, "epochs": 20,
            "started_at": "2025-01-01T00:00:00+00:00",
            "versions": {"dlx": "0.1.0", "python": "3.12.3", "torch": "2.5.1", "torchvision": "0.20.1",
                         "cuda": "", "cudnn": ""},
            "device": "cpu", "device_name": "CPU (2 threads)", "git": {"commit": "0" * 40, "dirty": False},
            "experiment_file": "experiments/width-depth.yaml", "argv": ["dlx", "sweep", "width-depth"],
            "cwd": str(REPO), "host": "bench", "platform": platform.platform(),
            "ended_at": "2025-01-01T01:00:00+00:00", "epochs_completed": 20, "train_seconds": 246.9,
            "wall_seconds": 300.0 * w * d, "best_epoch": 20, "best_val_acc": acc, "best_val_loss": 0.05,
            "final_train_loss": 0.02, "final_train_acc": 0.99, "images_per_s": 4455.5 / (w * d),
            "test_acc": acc, "test_loss": 0.05,
            "diagnosis": {"verdict": "ok", "reason": "", "gap": 0.01, "overfit_epochs": 0},
        }  # fmt: skip
        (path / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=3000, help="run folders (default 3000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed compare() calls (default 3)")
    parser.add_argument("--keep", type=Path, help="make the runs here (reused when it holds them already)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of one call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlx-bench-compare-") as tmp:
        root = args.keep or Path(tmp)
        if not (root / "bench").is_dir():
            t0 = time.perf_counter()
            make_runs(root, args.runs)
            print(f"made {args.runs} runs in {root} ({time.perf_counter() - t0:.1f} s)")
        print(f"cpu: {cpu_model()}; python {platform.python_version()}")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = compare([root])
            times.append(time.perf_counter() - t0)
        print(f"compare: {len(result.runs)} runs, {len(result.rows)} rows, {len(result.skipped)} skipped")
        print("seconds: " + ", ".join(f"{t:.2f}" for t in times) + f"  (best {min(times):.2f})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            compare([root])
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
