"""Several processes, checked in one: the launcher environment, the settings of a multi-process run, the
collectives on a real two-process gloo group, gradient accumulation, scaled rates, 16-bit refusals, and a
schedule resumed with other steps per epoch. Real ``--devices 2`` runs are in test_multiprocess.py (slow)."""

from __future__ import annotations

import gc
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from typer.testing import CliRunner

from dlx.build import global_batch, lr_factor, prepare
from dlx.cli import app
from dlx.config import config_from_dict
from dlx.distributed import SINGLE, World, from_environment
from dlx.errors import ConfigError, DlxError
from dlx.group import check_launcher
from dlx.launch import processes_for, root_failure
from dlx.schedule import build_schedule
from dlx.session import start_run
from tests.conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")

LAUNCHED = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "h",
            "MASTER_PORT": "29500"}  # fmt: skip


def mlp(runs_dir: Path, **overrides: object) -> dict:
    cfg = tiny(runs_dir, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1},
               data={"dataset": "mnist", "val_size": 200, "train_size": 1000, "test_size": 500, "batch_size": 50},
               **{"train.epochs": 1, "output.plots": False})  # fmt: skip
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        cfg.setdefault(section, {})[field] = value
    return cfg


# --- where a launcher put this process


def test_the_environment_of_a_launcher_gives_the_world() -> None:
    assert from_environment({}) is None  # no launcher: a single process
    assert from_environment(LAUNCHED) == World(rank=3, size=8, local_rank=1, local_size=2)
    assert from_environment({"RANK": "0", "WORLD_SIZE": "1"}) == World()  # torchrun --nproc-per-node 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"RANK": "x"}, "environment: RANK='x' is not a number (set by the launcher that started dlx)"),
        ({"RANK": "8"}, "environment: RANK=8, WORLD_SIZE=8, LOCAL_RANK=1, LOCAL_WORLD_SIZE=2 do not fit together"),
        ({"MASTER_PORT": ""}, "environment: WORLD_SIZE=8 but MASTER_PORT not set; start dlx with torchrun (it sets "
                              "them) or set them to rank 0's address"),
        ({"WORLD_SIZE": None}, "environment: WORLD_SIZE not set, but a launcher set RANK, LOCAL_RANK, "
                               "LOCAL_WORLD_SIZE; set RANK and WORLD_SIZE"),
    ],
)  # fmt: skip
def test_a_broken_launcher_environment_is_one_line(change: dict, message: str) -> None:
    env = {k: v for k, v in {**LAUNCHED, **change}.items() if v is not None}
    with pytest.raises(DlxError) as e:
        from_environment(env)
    assert str(e.value) == message


def test_an_explicit_train_devices_must_agree_with_the_launcher(runs_dir: Path) -> None:
    world = World(rank=0, size=4, local_rank=0, local_size=2)
    check_launcher(config_from_dict(mlp(runs_dir)), world)  # devices 1 (the default): the launcher decides
    check_launcher(config_from_dict(mlp(runs_dir, **{"train.devices": 2})), world)
    with pytest.raises(DlxError) as e:
        check_launcher(config_from_dict(mlp(runs_dir, **{"train.devices": 4})), world)
    assert str(e.value) == ("train.devices: 4, but the launcher started 2 process(es) on this machine "
                            "(LOCAL_WORLD_SIZE); drop train.devices or make the two agree")  # fmt: skip


def test_processes_on_cpu_are_what_train_devices_says_and_auto_is_one(runs_dir: Path) -> None:
    assert processes_for(config_from_dict(mlp(runs_dir, **{"train.devices": 3}))) == 3
    assert processes_for(config_from_dict(mlp(runs_dir, **{"train.devices": "auto"}))) == 1
    assert processes_for(config_from_dict(mlp(runs_dir)), devices=2) == 2


def test_devices_is_refused_unless_a_count_or_auto(runs_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ntrain: {devices: 0}\n")
    result = CliRunner().invoke(app, ["train", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: {path}: train.devices: got 0; allowed: 'auto' or a number of processes 1..1024"
    )
    result = CliRunner().invoke(app, ["train", str(path), "--devices", "two"])
    assert result.output.strip() == "error: --devices: got 'two'; allowed: 'auto' or a number of processes 1..1024"


# --- the collectives, on a real group of two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _collectives(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    world = World(rank=rank, size=2, local_rank=rank, local_size=2)
    cpu = torch.device("cpu")
    n = 7  # shards of 4 and 3: unequal, no padding
    mine = torch.arange(n)[rank::2] * 10
    model = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.running_mean.fill_(rank + 1.0)
        model.weight.fill_(rank + 5.0)
    world.broadcast_state(model, buffers_only=True)
    result = {
        "sum": world.sum(torch.tensor(1.5), rank + 1, torch.tensor(2), device=cpu),
        "gathered": world.gather_strided(mine, n).tolist(),
        "object": world.broadcast_object(f"from {rank}"),
        "all": world.all_objects(rank * 2),
        "mean": model.running_mean.tolist(),
        "weight": model.weight.tolist(),
    }
    world.broadcast_state(model)
    result["weight_after"] = model.weight.tolist()
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


def test_collectives_of_two_gloo_processes(tmp_path: Path) -> None:
    out = str(tmp_path / "result")
    mp.start_processes(_collectives, args=(_free_port(), out), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        r = torch.load(f"{out}.{rank}")
        assert r["sum"] == [3.0, 3.0, 4.0]  # float64: counts stay exact
        assert r["gathered"] == [0, 10, 20, 30, 40, 50, 60]  # x[rank::2] reassembled in order
        assert r["object"] == "from 0" and r["all"] == [0, 2]
        assert r["mean"] == [1.0, 1.0, 1.0]  # rank 0's batch-norm statistics everywhere...
        assert r["weight"] == [rank + 5.0] * 3  # ... and only them, with buffers_only
        assert r["weight_after"] == [5.0] * 3


def test_a_single_process_world_makes_every_collective_a_no_op() -> None:
    cpu = torch.device("cpu")
    assert SINGLE.sum(torch.tensor(2.0), 3, device=cpu) == [2.0, 3.0]
    assert SINGLE.gather_strided(torch.tensor([4, 5]), 2).tolist() == [4, 5]
    assert SINGLE.broadcast_object("x") == "x" and SINGLE.all_objects(1) == [1]
    SINGLE.barrier()


# --- what the global batch changes


def test_accumulating_two_half_batches_trains_like_the_whole_batch(runs_dir: Path) -> None:
    whole = start_run(config_from_dict(mlp(runs_dir, **{"data.batch_size": 100})), run_id="whole", quiet=True)
    halves = start_run(config_from_dict(mlp(runs_dir, **{"train.grad_accum": 2})), run_id="halves", quiet=True)
    assert halves["global_batch"] == whole["global_batch"] == 100
    assert halves["test_acc"] == whole["test_acc"] > 0.5
    assert halves["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-5)


def test_accumulation_longer_than_an_epoch_is_refused(runs_dir: Path) -> None:
    cfg = config_from_dict(mlp(runs_dir, **{"train.grad_accum": 21}))
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    assert e.value.problems == ["tiny: train.grad_accum: got 21, but each process has only 20 batch(es) per epoch "
                                "(1,000 training images over 1 process(es), data.batch_size 50)"]  # fmt: skip


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 8.0), ("sqrt", math.sqrt(8.0))])
def test_scale_lr_follows_the_global_batch(runs_dir: Path, rule: str, factor: float) -> None:
    cfg = config_from_dict(mlp(runs_dir, **{"optimizer.scale_lr": rule, "train.grad_accum": 2}))
    assert global_batch(cfg, 4) == 50 * 4 * 2
    assert lr_factor(cfg, 4) == pytest.approx(factor)  # base_batch: one device's batch
    cfg = config_from_dict(mlp(runs_dir, **{"optimizer.scale_lr": rule, "optimizer.base_batch": 25}))
    assert lr_factor(cfg, 4) == pytest.approx(factor)  # 4 x 50 images over 25


def test_a_single_run_records_its_world_and_scaled_rate(runs_dir: Path) -> None:
    cfg = mlp(runs_dir, **{"optimizer.scale_lr": "linear", "optimizer.base_batch": 25})
    s = start_run(config_from_dict(cfg), quiet=True)
    assert (s["world_size"], s["global_batch"], s["grad_accum"], s["lr"]) == (1, 50, 1, pytest.approx(0.2))


# --- machine-dependent settings


def test_fp16_on_cpu_is_refused(runs_dir: Path) -> None:
    with pytest.raises(ConfigError) as e:
        prepare(config_from_dict(mlp(runs_dir, **{"train.precision": "fp16"})))
    assert e.value.problems[0].startswith("tiny: train.precision: 'fp16' on CPU is refused: CPUs have no fast fp16")


def test_bf16_on_a_cpu_without_native_bf16_is_refused(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlx.devices

    monkeypatch.setattr(dlx.devices, "native_cpu_bf16", lambda: False)
    with pytest.raises(ConfigError) as e:
        prepare(config_from_dict(mlp(runs_dir, **{"train.precision": "bf16"})))
    assert e.value.problems == ["tiny: train.precision: 'bf16' on this CPU is refused: it has neither AVX512-BF16 "
                                "nor AMX, so bf16 is emulated and slower than fp32; use 'fp32'"]  # fmt: skip


@pytest.mark.skipif(not __import__("dlx.devices").devices.native_cpu_bf16(), reason="this CPU has no native bf16")
def test_bf16_trains_on_a_cpu_with_native_bf16(runs_dir: Path) -> None:
    s = start_run(config_from_dict(mlp(runs_dir, **{"train.precision": "bf16"})), quiet=True)
    assert s["status"] == "completed" and s["test_acc"] > 0.5


def test_sync_batch_norm_is_refused_off_cuda(runs_dir: Path) -> None:
    with pytest.raises(ConfigError) as e:
        prepare(config_from_dict(mlp(runs_dir, **{"regularization.sync_batch_norm": True})))
    assert e.value.problems == ["tiny: regularization.sync_batch_norm: PyTorch's SyncBatchNorm needs CUDA; this run "
                                "is on cpu: remove the key"]  # fmt: skip


# --- a resume whose steps per epoch changed


@pytest.mark.parametrize("name", ["cosine", "onecycle", "multistep"])
def test_a_schedule_put_at_a_step_has_the_rate_of_one_stepped_there(name: str) -> None:
    def schedule(lr: float = 0.5) -> tuple[torch.optim.Optimizer, object]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
        return opt, build_schedule(name, opt, epochs=4, steps_per_epoch=10, warmup_epochs=0.0)

    stepped_opt, stepped = schedule()
    for _ in range(25):
        stepped_opt.step()
        stepped.after_step()
    jumped_opt, jumped = schedule()
    jumped.fast_forward(25)
    assert jumped_opt.param_groups[0]["lr"] == pytest.approx(stepped_opt.param_groups[0]["lr"], rel=1e-12)


def test_a_two_process_checkpoint_resumes_on_one_process_at_the_rate_of_its_epoch(tmp_path: Path) -> None:
    """last.pt of a 2-process run (10 steps per epoch, rate scaled x2) continued by one process (20 steps per
    epoch, x1): the momenta carry over; the rate is the one-process cosine's at the same epoch."""
    from dlx.checkpoint import Checkpointer, load_checkpoint, save_checkpoint
    from dlx.runs import Run

    def build(name: str, per_epoch: int, factor: float) -> tuple:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1 * factor, momentum=0.9)
        schedule = build_schedule(name, opt, epochs=4, steps_per_epoch=per_epoch, warmup_epochs=0.0)
        return model, opt, schedule, torch.amp.GradScaler("cpu", enabled=False)

    def train(model: torch.nn.Module, opt: torch.optim.Optimizer, schedule: object, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            model(torch.ones(4, 3)).sum().backward()
            opt.step()
            schedule.after_step()

    for name in ("cosine", "none"):
        run = Run(tmp_path / name)
        model, opt, schedule, scaler = build(name, 10, 2.0)
        train(model, opt, schedule, 20)
        Checkpointer(run, model, opt, schedule, scaler, {}, steps_per_epoch=10, lr_factor=2.0).save_last({"epoch": 2})
        last = load_checkpoint(run.last_checkpoint)
        save_checkpoint(run.last_checkpoint, {**last, "world_size": 2})  # as rank 0 of two writes it

        resumed = build(name, 20, 1.0)
        checkpoints = Checkpointer(run, *resumed, {}, steps_per_epoch=20, lr_factor=1.0)
        assert checkpoints.restore("cpu") == {"epoch": 2}
        assert checkpoints.previous_world_size == 2
        one = build(name, 20, 1.0)  # a one-process run that trained 2 epochs of 20 steps
        train(one[0], one[1], one[2], 40)
        assert resumed[1].param_groups[0]["lr"] == pytest.approx(one[1].param_groups[0]["lr"], rel=1e-12)
        moment = next(iter(resumed[1].state.values()))["momentum_buffer"]
        assert torch.equal(moment, next(iter(opt.state.values()))["momentum_buffer"])


def _ddp_threads(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
    dist.destroy_process_group()
    gc.collect()
    names = [(Path("/proc/self/task") / t / "comm").read_text().strip() for t in os.listdir("/proc/self/task")]
    Path(f"{out}.{rank}").write_text(" ".join(names))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads threads from /proc")
def test_ddp_leaves_gloo_threads_running_after_destroy_process_group(tmp_path: Path) -> None:
    """One reason a rank ends with os._exit (dlx.process_end): gloo's threads outlive destroy_process_group once
    DDP held the group. If a torch release frees the group, this fails and process_end's note on gloo can go."""
    out = str(tmp_path / "threads")
    mp.start_processes(_ddp_threads, args=(_free_port(), out), nprocs=2, start_method="spawn")
    assert "gloo" in Path(f"{out}.0").read_text()


def _failure(tmp_path: Path, rank: int, exitcode: int, message: str | None) -> ProcessFailure:
    error_file = tmp_path / f"error{rank}.json"
    if message is not None:  # what torch's ErrorHandler writes for a rank's exception
        data = {"message": {"message": message, "extraInfo": {"py_callstack": "", "timestamp": "1700000000"}}}
        error_file.write_text(json.dumps(data))
    return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file=str(error_file))


def test_the_root_failure_is_the_killed_rank_not_the_one_that_lost_it(tmp_path: Path) -> None:
    # Rank 0's error file is older than the moment the agent saw rank 1 killed: torch names rank 0 first.
    lost = _failure(tmp_path, 0, 1, "DlxError: lost another process of the run (Connection reset by peer)")
    killed = _failure(tmp_path, 1, -9, None)
    error = ChildFailedError("dlx", {0: lost, 1: killed})
    assert error.get_first_failure()[0] == 0
    rank, failure = root_failure(error)
    assert (rank, failure.exitcode) == (1, -9)


def test_the_root_failure_is_torchs_first_when_it_is_a_cause(tmp_path: Path) -> None:
    crashed = _failure(tmp_path, 1, 1, "ValueError: a bug")
    error = ChildFailedError("dlx", {0: _failure(tmp_path, 0, -15, None), 1: crashed})
    assert root_failure(error)[0] == 1
    only_lost = ChildFailedError("dlx", {0: _failure(tmp_path, 0, 1, "lost another process of the run (x)")})
    assert root_failure(only_lost)[0] == 0
