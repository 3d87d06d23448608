"""Sweep cells on several devices: the GPU pool never hands one GPU to two cells; a cell asking for more GPUs
than the sweep has is refused before anything runs; on CPU a cell with train.devices: 2 trains on 2 processes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from dlx.config import config_from_dict
from dlx.errors import ConfigError
from dlx.sweep import load_sweep, run_sweep
from dlx.sweep.pool import GpuPool, Plan, gpus_needed, plan_workers, sweep_gpus
from tests.conftest import tiny

DATA = {"dataset": "mnist", "val_size": 100, "train_size": 400, "test_size": 200, "batch_size": 50}


def cfg(runs_dir: Path, **train: object):
    return config_from_dict(tiny(runs_dir, **{f"train.{k}": v for k, v in train.items()}))


def test_a_cell_takes_its_devices_from_the_sweeps_gpus(runs_dir: Path) -> None:
    gpus = ["0", "1", "2", "3"]
    assert gpus_needed(cfg(runs_dir, device="auto"), gpus) == 1
    assert gpus_needed(cfg(runs_dir, device="cuda", devices=3), gpus) == 3
    assert gpus_needed(cfg(runs_dir, device="auto", devices="auto"), gpus) == 4
    assert gpus_needed(cfg(runs_dir, device="cpu", devices=2), gpus) == 0  # gloo processes take no GPU
    assert gpus_needed(cfg(runs_dir, device="auto", devices=2), []) == 0  # a machine without GPUs


def test_the_pool_never_gives_one_gpu_to_two_cells() -> None:
    pool = GpuPool(["0", "1", "2", "3"])
    assert pool.take(1, own="2") == ["2"]
    assert pool.take(2) == ["0", "1"]
    got: list[list[str] | None] = []
    waiter = threading.Thread(target=lambda: got.append(pool.take(2)))
    waiter.start()
    time.sleep(0.2)
    assert got == []  # only GPU 3 is free: the 2-GPU cell waits
    pool.give_back(["2"])
    waiter.join(timeout=5)
    assert got == [["3", "2"]]
    with pytest.raises(ValueError, match="5 GPUs asked of 4"):
        pool.take(5)


def test_a_waiting_multi_gpu_cell_is_not_overtaken_and_stop_releases_the_waiters() -> None:
    pool = GpuPool(["0", "1"])
    assert pool.take(1, own="0") == ["0"]
    order: list[str] = []
    big = threading.Thread(target=lambda: order.append(f"big {pool.take(2)}"))
    big.start()
    time.sleep(0.2)
    small = threading.Thread(target=lambda: order.append(f"small {pool.take(1, own='1')}"))
    small.start()
    time.sleep(0.2)
    assert order == []  # GPU 1 is free, but the 2-GPU cell asked first
    pool.give_back(["0"])
    big.join(timeout=5)
    assert order == ["big ['1', '0']"]
    pool.stop()
    small.join(timeout=5)
    assert order == ["big ['1', '0']", "small None"]  # Ctrl-C: the waiting cell stays pending


def write_sweep(tmp_path: Path, runs_dir: Path, cells: list[dict], device: str = "cpu") -> Path:
    base = tiny(runs_dir, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1}, data=DATA,
                **{"train.epochs": 1, "train.device": device, "output.plots": False})  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "variants": cells}))
    return path


def test_a_cell_asking_for_more_gpus_than_the_sweep_has_is_refused_first(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlx.sweep.pool

    monkeypatch.setattr(dlx.sweep.pool, "visible_gpus", lambda: ["0", "1"])
    cells = [{"name": "two", "train.devices": 2}, {"name": "four", "train.devices": 4}]
    path = write_sweep(tmp_path, runs_dir, cells, device="auto")  # auto: the cells may use the GPUs
    with pytest.raises(ConfigError) as e:
        run_sweep(load_sweep(str(path), [], None))
    assert e.value.problems == [f"{path}: cell four: train.devices: 4 GPUs asked, but the sweep has 2 (GPUs 0, 1; "
                                "CUDA_VISIBLE_DEVICES); at most 2"]  # fmt: skip
    assert not (runs_dir / "devices").exists() or not list((runs_dir / "devices").glob("*/summary.json"))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_on_cpu_a_cell_with_two_devices_trains_on_two_processes(tmp_path: Path, runs_dir: Path) -> None:
    path = write_sweep(tmp_path, runs_dir, [{"name": "one"}, {"name": "two", "train.devices": 2}])
    result = run_sweep(load_sweep(str(path), [], None))
    assert result.ok
    folder = runs_dir / "devices"
    one, two = (json.loads((folder / c / "summary.json").read_text()) for c in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert (
        two["global_batch"] == 100 and two["status"] == "completed" and two["test_acc"] > 0.3
    )  # 8 steps (chance: 10%)
    index = json.loads((folder / "sweep.json").read_text())
    assert index["counts"] == {"completed": 2}


def test_a_sweep_mixing_cpu_and_gpu_cells_still_hands_out_its_gpus(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlx.sweep.pool

    monkeypatch.setattr(dlx.sweep.pool, "visible_gpus", lambda: ["0", "1"])
    cells = [{"name": "cpu"}, {"name": "gpu", "train.device": "auto", "train.devices": 2}]
    sweep = load_sweep(str(write_sweep(tmp_path, runs_dir, cells)))  # the base trains on the CPU
    plan = plan_workers(sweep, None)
    assert (plan.gpus, plan.workers) == (["0", "1"], 2)  # the 2-GPU cell never shares a GPU with another cell
    assert [gpus_needed(c.config, plan.gpus) for c in sweep.cells] == [0, 2]
    pinned = [{"name": "cpu"}, {"name": "one", "train.device": "cuda:1"}]
    assert sweep_gpus(load_sweep(str(write_sweep(tmp_path, runs_dir, pinned)))) == []  # a named GPU: left alone


def test_the_dry_run_says_how_devices_are_handed_out(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlx.sweep.pool

    cells = [{"name": "one"}, {"name": "two", "train.devices": 2}, {"name": "all", "train.devices": "auto"}]
    sweep = load_sweep(str(write_sweep(tmp_path, runs_dir, cells, device="auto")))
    gpus = Plan(workers=3, threads=4, gpus=["0", "1", "2", "3"])
    assert gpus.describe(sweep) == ("3 workers on GPUs 0, 1, 2, 3, 4 CPU threads each; cells on 2 or 4 GPUs take "
                                    "that many free GPUs, never shared (they wait for them)")  # fmt: skip
    monkeypatch.setattr(dlx.sweep.pool, "visible_gpus", lambda: [])
    cpu = load_sweep(str(write_sweep(tmp_path, runs_dir, cells, device="cpu")))
    assert Plan(workers=2, threads=1, gpus=[]).describe(cpu) == (
        "2 workers on CPU, 1 CPU thread each; cells with train.devices 2 on CPU train on that many gloo processes "
        "sharing their worker's threads"
    )
