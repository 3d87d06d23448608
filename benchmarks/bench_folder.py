"""An image folder's first run (decode everything, write the cache) against its second (read the cache).

    python benchmarks/bench_folder.py                                 # 10,000 MNIST digits as 28x28 PNGs
    python benchmarks/bench_folder.py --format jpg --size 128 --image-size 64   # RGB JPEGs, resized to 64

Writes the first --images MNIST training digits into <dir>/train/<digit>/NNNNN.<ext> (not timed), deletes the
cache, then times ``load_data`` alone inside this process, and in separate processes ``dlx train <experiment>
--dry-run`` (process start to a built model with the data loaded and split: what a run does before its first
step), each --repeat times cold (cache deleted before each) and warm; medians. Prints the CPU, torch, decode threads and the times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dlx.config import config_from_dict  # noqa: E402
from dlx.data.datasets import load_data, load_dataset  # noqa: E402
from dlx.data.listing import list_dataset  # noqa: E402
from dlx.data.own_images import CACHE_DIR, decode_threads  # noqa: E402
from dlx.provenance import cpu_model  # noqa: E402


def write_folder(root: Path, n: int, fmt: str, size: int) -> None:
    mnist = load_dataset("mnist")
    for i in range(n):
        digit = int(mnist.train_labels[i])
        folder = root / "train" / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(mnist.train_images[i, 0].numpy())
        if fmt == "jpg":
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        elif size != 28:
            im = im.resize((size, size), Image.BILINEAR)
        im.save(folder / f"{i:05d}.{fmt}", quality=90) if fmt == "jpg" else im.save(folder / f"{i:05d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--size", type=int, default=28, help="side of the written files")
    p.add_argument("--image-size", type=int, default=28, help="data.image_size")
    p.add_argument("--dir", type=Path, default=Path("/tmp/dlx-bench-folder"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    root = args.dir / f"{args.format}-{args.size}"
    if not (root / "train").is_dir() or sum(1 for _ in (root / "train").rglob(f"*.{args.format}")) != args.images:
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        write_folder(root, args.images, args.format, args.size)
        print(f"wrote {args.images:,} {args.format} files in {time.perf_counter() - t:.1f} s to {root}")
    data = {"dataset": "folder", "path": str(root), "image_size": args.image_size, "val_size": 0.1}
    experiment = {"name": "bench_folder", "data": data, "model": {"name": "deep_cnn"}, "train": {"device": "cpu"}}
    yaml_file = args.dir / "bench_folder.yaml"
    yaml_file.write_text(json.dumps(experiment))
    cmd = [sys.executable, "-m", "dlx", "train", str(yaml_file), "--dry-run"]

    def dry_run() -> float:
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        return time.perf_counter() - t

    def in_process() -> float:
        t = time.perf_counter()
        load_data(config_from_dict({"name": "b", "data": data}).data)
        return time.perf_counter() - t

    def cold(measure: object) -> float:
        shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
        return measure()  # type: ignore[operator]

    cold_load = statistics.median(cold(in_process) for _ in range(args.repeat))
    warm_load = statistics.median(in_process() for _ in range(args.repeat))
    cold_run = statistics.median(cold(dry_run) for _ in range(args.repeat))
    warm_run = statistics.median(dry_run() for _ in range(args.repeat))
    cache = next((root / CACHE_DIR).glob("*.pt"))

    print(f"cpu: {cpu_model()}; torch {torch.__version__}; {torch.get_num_threads()} torch threads, "
          f"{decode_threads(list_dataset('folder', root))} decode threads")  # fmt: skip
    print(f"folder: {args.images:,} {args.format} files of {args.size}x{args.size} -> image_size {args.image_size}; "
          f"cache {cache.stat().st_size / 2**20:.1f} MiB")  # fmt: skip
    print(f"{'':34} {'first run (decode)':>20} {'second run (cache)':>20}")
    print(f"{'dlx train --dry-run, process wall':34} {cold_run:>19.2f}s {warm_run:>19.2f}s")
    print(f"{'load_data in one process':34} {cold_load:>19.2f}s {warm_load:>19.2f}s")


if __name__ == "__main__":
    main()
