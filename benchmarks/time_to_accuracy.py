"""Seconds to 99.0% / 99.3% / 99.4% MNIST test accuracy for the shipped experiments, over seeds.

    python benchmarks/time_to_accuracy.py                           # fast x3, deep x5, book x3 seeds
    python benchmarks/time_to_accuracy.py --only mnist_fast --seeds 0 1 2 3 4
    python benchmarks/time_to_accuracy.py --only mnist_deep --set train.precision=bf16   # extra --set for every run

Each run is ``dlx train experiments/<name>.yaml --set seed=S`` in a fresh process, as a user types it, with
``train.test_every_epoch`` on when the experiment has more than one epoch (the test set measured after every
epoch; one extra evaluation per epoch, counted in the times below). Per run: wall seconds (process start to
exit, what a user waits), the test accuracy of the run's summary (best-by-validation weights), and the seconds
from process start to the end of the first epoch whose test accuracy reached each target: the run's
``startup_seconds`` plus every epoch's training and evaluation seconds up to it. A target never reached shows
``-``. Per experiment: mean +- std and n. Printed with the CPU, threads and versions; nothing else may run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlx.provenance import cpu_model, device_name  # noqa: E402

TARGETS = (0.99, 0.993, 0.994)
SEEDS = {"mnist_fast": 3, "mnist_deep": 5, "mnist_deep_book": 3}


def one_run(name: str, seed: int, runs_dir: Path, extra: list[str]) -> dict[str, object]:
    """Train ``experiments/<name>.yaml`` with ``seed`` (and the ``extra`` --set items) in a new process; its figures."""
    config = REPO / "experiments" / f"{name}.yaml"
    sets = [f"seed={seed}", f"output.runs_dir={runs_dir}", f"train.test_every_epoch={epochs_of(config) > 1}", *extra]
    argv = [sys.executable, "-m", "dlx", "train", str(config), "--run-id", f"seed{seed}", "-q"]
    for s in sets:
        argv += ["--set", s]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed:\n{done.stderr}")
    run = runs_dir / name / f"seed{seed}"
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    clock, reached = summary["startup_seconds"], {}
    for row in rows:
        clock += row["seconds"] + row["eval_seconds"]
        acc = row.get("test_acc", summary["test_acc"] if row is rows[-1] else None)
        for target in TARGETS:
            if target not in reached and acc is not None and acc >= target:
                reached[target] = clock
    return {"seed": seed, "wall": wall, "acc": summary["test_acc"], "epochs": len(rows),
            "startup": summary["startup_seconds"], "reached": reached}  # fmt: skip


def epochs_of(config: Path) -> int:
    from dlx.config import load_config

    return load_config(config).train.epochs


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} +- {fmt.format(sd)} (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(SEEDS), help="these experiments (default: all three)")
    parser.add_argument("--seeds", nargs="+", type=int, help="these seeds (default: 3, 5 and 3 seeds from 0)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every run's dlx train --set (e.g. train.precision=bf16)")  # fmt: skip
    args = parser.parse_args()

    gpu = f", {device_name(torch.device('cuda'))}" if torch.cuda.is_available() else ""
    extra = f"; --set {' '.join(args.set)}" if args.set else ""
    print(f"{cpu_model()}{gpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads; torch {torch.__version__}, "
          f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}{extra}")  # fmt: skip
    head = "".join(f"{'s to ' + format(t, '.1%'):>12}" for t in TARGETS)
    with tempfile.TemporaryDirectory(prefix="dlx-tta-") as tmp:
        for name in args.only or list(SEEDS):
            seeds = args.seeds or list(range(SEEDS[name]))
            print(
                f"\n{name} ({', '.join(map(str, seeds))})\n{'seed':>6}{'test acc':>10}{'wall s':>9}{'startup':>9}{head}"
            )
            results = []
            for seed in seeds:
                r = one_run(name, seed, Path(tmp), args.set)
                results.append(r)
                cells = "".join(f"{r['reached'][t]:>12.1f}" if t in r["reached"] else f"{'-':>12}" for t in TARGETS)
                print(f"{seed:>6}{100 * r['acc']:>9.2f}%{r['wall']:>9.1f}{r['startup']:>9.2f}{cells}", flush=True)
            print(f"  test acc  {spread([100 * r['acc'] for r in results], '{:.2f}')} %; "
                  f"wall {spread([r['wall'] for r in results], '{:.1f}')} s")  # fmt: skip
            for t in TARGETS:
                hit = [r["reached"][t] for r in results if t in r["reached"]]
                print(f"  to {t:.1%}: {len(hit)}/{len(results)} seeds, {spread(hit, '{:.1f}')} s")


if __name__ == "__main__":
    main()
